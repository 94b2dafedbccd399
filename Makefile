# The two commands a newcomer needs:  make demo   and   make test.
# Both create the environment in .venv/ first when it is missing (or pyproject.toml changed).

PYTHON  ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROFILE ?= demo
DATA    ?=
RUN     ?=

.PHONY: help venv demo test run report bench clean-notebooks check-notebooks gpu-ci clean

help:
	@echo "make demo      the whole course on the embedded demo data set, on CPU (about 10 minutes)"
	@echo "make test      the test suite (CPU)"
	@echo "make run PROFILE=homework DATA=/path/to/tinyvoc   the real run (GPU)"
	@echo "make report    rebuild report/ from the recorded runs"
	@echo "make bench     engine benchmark (train s/iter, inference s/img, peak memory)"

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --disable-pip-version-check -q -e ".[test]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VPY) -m helpers make-demo-data data/demo
	$(VPY) -m helpers validate-data data/demo
	$(VPY) -m helpers stats data/demo

test: $(STAMP)
	$(VPY) -m pytest -q

bench: $(STAMP)
	$(VPY) bench/bench_engines.py

clean:
	rm -rf runs/demo data/demo
