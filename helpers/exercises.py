"""Exercises that check themselves: ``ask`` prints a question, ``check`` prints feedback.

In a notebook::

    from helpers import exercises
    exercises.ask("box_iou")                 # the question, with its inputs
    answer = ...                             # the student's value
    exercises.check("box_iou", answer)       # "correct", or a hint naming the misconception

A wrong, malformed or missing answer (``...``) never raises, so "Run all" completes. The right
answer is computed from the exercise's inputs by :mod:`helpers.concepts` (never typed in);
inputs default to the values in the question and can be given, e.g. ``cfg=cfg`` for the config
in use. Each exercise knows the typical wrong answers (computed the same way, from the same
inputs) and the misconception behind each. The definitions are in :mod:`helpers.exercise_bank`;
``solutions/SOLUTIONS.md`` is generated from them (``python -m helpers.exercises``).
"""

from __future__ import annotations

import math
import numbers
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from .errors import HelpersError
from .io import write_text

NOTEBOOKS = ("01_data_exploration", "02_training", "03_weight_decay_ablation", "04_inference", "05_visualization")
KINDS = ("number", "int", "choice", "ints", "numbers")
SOLUTIONS_PATH = Path("solutions") / "SOLUTIONS.md"


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer, computed from the inputs, and the hint that names its misconception."""
    answer: Callable[[dict], Any]
    hint: str


@dataclass(frozen=True)
class Exercise:
    name: str
    notebook: str
    prompt: Callable[[dict], str]        # the question, from the inputs
    defaults: Callable[[], dict]         # the inputs the question uses unless the notebook passes its own
    solve: Callable[[dict], Any]         # the right answer, computed from the inputs
    kind: str                            # one of KINDS: how answers are read and compared
    hint: str                            # for a wrong answer no mistake explains
    explain: Callable[[dict], str]       # the worked solution (SOLUTIONS.md)
    mistakes: tuple[Mistake, ...] = ()
    choices: tuple[str, ...] = ()
    rtol: float = 1e-6
    diagnose: Callable[[Any, dict], str | None] | None = None  # a hint from the answer's shape (optional)
    example_wrong: Callable[[dict], Any] | None = field(default=None)  # a wrong answer no mistake names (tests)


class Feedback(NamedTuple):
    correct: bool
    text: str


class ExerciseError(HelpersError):
    """An exercise name or input that does not exist (a notebook bug, not a student's answer)."""


# --------------------------------------------------------------------------- the notebook API


def exercise(name: str) -> Exercise:
    from .exercise_bank import EXERCISES

    if name not in EXERCISES:
        raise ExerciseError(f"unknown exercise {name!r}; known: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def names(notebook: str | None = None) -> list[str]:
    """The exercises of one notebook (all when None), in course order."""
    from .exercise_bank import EXERCISES

    return [n for n, ex in EXERCISES.items() if notebook is None or ex.notebook == notebook]


def inputs_of(name: str, **inputs: Any) -> dict:
    """The exercise's default inputs, with those given replacing them."""
    ex = exercise(name)
    values = ex.defaults()
    unknown = sorted(set(inputs) - set(values))
    if unknown:
        raise ExerciseError(f"exercise {name!r} has no input {unknown[0]!r}; its inputs: {', '.join(values)}")
    values.update(inputs)
    return values


def question(name: str, **inputs: Any) -> str:
    ex = exercise(name)
    return f"Exercise {name}: {ex.prompt(inputs_of(name, **inputs))}\n{_form(ex)}"


def ask(name: str, **inputs: Any) -> None:
    """Print the question of exercise ``name``."""
    print(question(name, **inputs))


def solution(name: str, **inputs: Any) -> Any:
    """The right answer, computed from the inputs (for instructors and CI runs)."""
    return exercise(name).solve(inputs_of(name, **inputs))


def feedback(name: str, answer: Any, **inputs: Any) -> Feedback:
    """Whether ``answer`` is right, and the feedback text; never raises for any answer."""
    ex = exercise(name)
    values = inputs_of(name, **inputs)
    right = ex.solve(values)
    if answer is ... or answer is None:
        return Feedback(False, f"[{name}] no answer yet: replace ... with {_form(ex, short=True)}.")
    try:
        given = _read(ex, answer)
    except (TypeError, ValueError) as e:
        return Feedback(False, f"[{name}] cannot read this answer ({e}): give {_form(ex, short=True)}.")
    if _same(ex, given, right):
        return Feedback(True, f"[{name}] correct: {_show(right)}.")
    for mistake in ex.mistakes:
        try:
            wrong = _read(ex, mistake.answer(values))
        except (TypeError, ValueError, ZeroDivisionError):
            continue
        if not _same(ex, wrong, right) and _same(ex, given, wrong):
            return Feedback(False, f"[{name}] not yet: {mistake.hint}")
    if ex.diagnose is not None:
        hint = ex.diagnose(given, values)
        if hint:
            return Feedback(False, f"[{name}] not yet: {hint}")
    return Feedback(False, f"[{name}] not yet: {ex.hint}")


def check(name: str, answer: Any, fill: bool = False, **inputs: Any) -> None:
    """Print whether ``answer`` to exercise ``name`` is right, or a hint; never raises for any answer.

    ``fill=True`` (a notebook's ``solutions`` parameter: instructors, CI) checks the computed solution
    where no answer was given, and says so, so a headless run proves every exercise's inputs work."""
    if fill and (answer is ... or answer is None):
        answer = solution(name, **inputs)
        print(f"[{name}] (solutions on) answer filled in: {_show(answer)}")
    print(feedback(name, answer, **inputs).text)


# --------------------------------------------------------------------------- reading and comparing


def _read(ex: Exercise, answer: Any) -> Any:
    """The answer in the exercise's form; TypeError / ValueError naming what is wrong."""
    if ex.kind == "number":
        return _number(answer)
    if ex.kind == "int":
        value = _number(answer)
        if not float(value).is_integer():
            raise ValueError(f"{value!r} is not a whole number")
        return int(value)
    if ex.kind == "choice":
        if not isinstance(answer, str):
            raise TypeError(f"expected one of {', '.join(map(repr, ex.choices))}, got {type(answer).__name__}")
        text = answer.strip().lower()
        options = {c.lower(): c for c in ex.choices}
        if text not in options:
            raise ValueError(f"{answer!r} is not one of {', '.join(map(repr, ex.choices))}")
        return options[text]
    if ex.kind in ("ints", "numbers"):
        if isinstance(answer, (str, bytes, dict)) or not hasattr(answer, "__iter__"):
            raise TypeError(f"expected a list of numbers, got {type(answer).__name__}")
        values = [_number(v) for v in answer]
        if ex.kind == "ints":
            if not all(float(v).is_integer() for v in values):
                raise ValueError("every entry must be a whole number")
            values = [int(v) for v in values]
        return values
    raise ValueError(f"unknown exercise kind {ex.kind!r}")


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        if hasattr(value, "item") and getattr(value, "size", 1) == 1:  # a numpy scalar or 0-d array
            return _number(value.item())
        raise TypeError(f"expected a number, got {type(value).__name__}")
    number = float(value)  # a str that is not a number raises ValueError
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _same(ex: Exercise, a: Any, b: Any) -> bool:
    if ex.kind == "number":
        return math.isclose(a, b, rel_tol=ex.rtol, abs_tol=1e-12)
    if ex.kind == "numbers":
        return len(a) == len(b) and all(math.isclose(x, y, rel_tol=ex.rtol, abs_tol=1e-12) for x, y in zip(a, b))
    return a == b


def _show(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _form(ex: Exercise, short: bool = False) -> str:
    forms = {"number": "a number", "int": "a whole number", "ints": "a list of whole numbers",
             "numbers": "a list of numbers", "choice": "one of " + ", ".join(repr(c) for c in ex.choices)}
    form = forms[ex.kind]
    return form if short else f"Answer with {form}: exercises.check({ex.name!r}, answer)"


# --------------------------------------------------------------------------- the solutions file


def solutions_markdown() -> str:
    """Every exercise with its question, computed answer, worked solution and the typical
    mistakes with their hints, per notebook, for the default inputs."""
    from .exercise_bank import EXERCISES

    lines = ["# Solutions to the course exercises", "",
             "Generated by `python -m helpers.exercises` from `helpers/exercise_bank.py`; a test checks it is",
             "up to date. Answers are computed for each exercise's default inputs (those in its question).",
             "A notebook that passes its own inputs (`cfg=cfg`) gets its answer from",
             "`exercises.solution(name, cfg=cfg)`.", ""]
    for notebook in NOTEBOOKS:
        lines += [f"## {notebook}", ""]
        for name, ex in EXERCISES.items():
            if ex.notebook != notebook:
                continue
            values = ex.defaults()
            lines += [f"### `{name}`", "", ex.prompt(values), "", f"**Answer:** `{_show(ex.solve(values))}`", "",
                      ex.explain(values), ""]
            right, wrong, seen = _read(ex, ex.solve(values)), [], []
            for mistake in ex.mistakes:
                try:
                    value = _read(ex, mistake.answer(values))
                except (TypeError, ValueError, ZeroDivisionError):
                    continue
                if _same(ex, value, right) or any(_same(ex, value, other) for other in seen):
                    continue  # not a mistake for these inputs, or one already listed (check gives the first hint)
                seen.append(value)
                wrong.append(f"- `{_show(value)}`: {mistake.hint}")
            if wrong:
                lines += ["Typical mistakes:", "", *wrong, ""]
    return "\n".join(lines).rstrip() + "\n"


def write_solutions(path: str | Path = SOLUTIONS_PATH) -> Path:
    return write_text(path, solutions_markdown())


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    path = write_solutions(args[0] if args else SOLUTIONS_PATH)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
