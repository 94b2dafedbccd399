# The two commands a newcomer needs:  make demo   and   make test.
# Both create the environment in .venv/ first when it is missing (or pyproject.toml changed).

PYTHON  ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROFILE ?= demo
DATA    ?=
ENGINE  ?=
RUN     ?= runs/demo
CONFIG  ?=
BENCH_ARGS ?=

RUN_ARGS = --profile $(PROFILE) $(if $(DATA),--data $(DATA)) $(if $(ENGINE),-p engine $(ENGINE))

.PHONY: help venv demo test test-browser run report bench gpu-check check-notebooks gpu-ci clean

help:
	@echo "make demo      the whole course on the embedded demo data set, on CPU (about 10 minutes)"
	@echo "make test      the test suite (CPU), the browser test included when chromium is installed"
	@echo "make test-browser  only the browser test: the notebooks in JupyterLab in headless Chromium"
	@echo "make run PROFILE=homework DATA=/path/to/tinyvoc   the real run (GPU)"
	@echo "make report    rebuild report/ from the recorded runs"
	@echo "make bench     engine benchmark (train s/iter, inference s/img, peak memory, fraction of peak FLOP/s)"
	@echo "make bench CONFIG=configs/homework.yaml DATA=/path/to/tinyvoc BENCH_ARGS=\"--stand-in-weights MODEL.DEVICE cpu\""
	@echo "make gpu-check [DATA=/path/to/tinyvoc]   both engines, fp32 vs AMP, on one GPU (under 10 minutes)"

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --disable-pip-version-check -q -e ".[jupyter,test]"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VPY) -m helpers run-notebooks --profile demo

run: $(STAMP)
	$(VPY) -m helpers run-notebooks $(RUN_ARGS)

gpu-ci: $(STAMP)
	$(VPY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-ci needs a CUDA device')"
	$(VPY) -m helpers run-notebooks --profile gpu-ci $(if $(DATA),--data $(DATA)) --log-output

report: $(STAMP)
	$(VPY) report/build.py --run $(RUN)

check-notebooks: $(STAMP)
	$(VPY) -m pytest -q tests/test_notebooks.py -k "not headless"

test: $(STAMP)
	$(VPY) -m pytest -q

# The five notebooks in JupyterLab in headless Chromium (part of make test; skips without chromium).
test-browser: $(STAMP)
	$(VPY) -m pytest -q -m browser

# The demo config on a generated demo set, or CONFIG on DATA; BENCH_ARGS: more options and KEY VALUE overrides.
bench: $(STAMP)
	$(VPY) bench/bench_engines.py $(if $(CONFIG),--config $(CONFIG)) $(if $(DATA),--data $(DATA)) $(BENCH_ARGS)

# One GPU, under 10 minutes: both engines (detectron2 where it imports), fp32 vs AMP, homework config,
# stand-in backbone weights (the homework's FrozenBN structure; --random-init for random init).
# Writes runs/gpu-check/gpu_check.json and prints a Markdown table.
gpu-check: $(STAMP)
	$(VPY) bench/gpu_check.py $(if $(DATA),--data $(DATA))

clean:
	rm -rf runs/demo data/demo
