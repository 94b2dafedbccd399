"""helpers.exercises: every check says "correct" to its computed answer, names the misconception
behind each typical wrong answer, and never raises for any answer; SOLUTIONS.md is up to date."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import concepts, exercises
from helpers.config import Config, load_config
from helpers.exercise_bank import EXERCISES

ALL = list(EXERCISES)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def test_every_notebook_has_at_least_three_exercises():
    for notebook in exercises.NOTEBOOKS:
        assert len(exercises.names(notebook)) >= 3, notebook
    assert len(ALL) >= 15
    assert {ex.notebook for ex in EXERCISES.values()} == set(exercises.NOTEBOOKS)


@pytest.mark.parametrize("name", ALL)
def test_right_answer_is_correct(name, capsys):
    answer = exercises.solution(name)
    exercises.check(name, answer)
    out = capsys.readouterr().out
    assert out.startswith(f"[{name}] correct")
    assert exercises.feedback(name, answer).correct


@pytest.mark.parametrize("name", ALL)
def test_each_typical_mistake_gets_its_hint(name):
    ex = EXERCISES[name]
    values = ex.defaults()
    right = ex.solve(values)
    seen = []
    named = 0
    for mistake in ex.mistakes:
        wrong = mistake.answer(values)
        if wrong == right or any(np.allclose(wrong, s) if ex.kind in ("number", "numbers") else wrong == s
                                 for s in seen):
            continue  # for these inputs this mistake gives the right answer, or an earlier mistake's value
        seen.append(wrong)
        fb = exercises.feedback(name, wrong)
        assert not fb.correct
        assert fb.text == f"[{name}] not yet: {mistake.hint}"
        named += 1
    assert named >= 1, "each exercise recognises at least one typical wrong answer"


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("answer", [..., None, "not a number", {"a": 1}, [1, "x"], float("nan"), True, object()])
def test_missing_or_malformed_answers_never_raise(name, answer, capsys):
    exercises.check(name, answer)
    out = capsys.readouterr().out
    assert out.startswith(f"[{name}] ") and "correct" not in out.split(":")[0]
    assert not exercises.feedback(name, answer).correct


def test_messages_for_missing_and_unreadable_answers():
    assert exercises.feedback("box_iou", ...).text == "[box_iou] no answer yet: replace ... with a number."
    assert exercises.feedback("rle_4x4", "0 2 3").text.startswith("[rle_4x4] cannot read this answer (expected a list")
    assert exercises.feedback("area_bucket", "huge").text.startswith("[area_bucket] cannot read this answer ('huge' is not one of")


def test_answers_in_other_forms_are_read():
    assert exercises.feedback("box_iou", "0.14285714285714").correct
    assert exercises.feedback("box_iou", np.float64(1 / 7)).correct
    assert exercises.feedback("rle_4x4", np.array([0, 2, 3, 2, 3, 2, 3, 1])).correct
    assert exercises.feedback("rle_4x4", (0, 2, 3, 2, 3, 2, 3, 1)).correct
    assert exercises.feedback("area_bucket", " Medium ").correct
    assert exercises.feedback("polygon_vertices", 5.0).correct
    assert not exercises.feedback("polygon_vertices", 5.5).correct


def test_unrecognised_wrong_answers_get_the_general_hint():
    assert exercises.feedback("box_iou", 0.9).text == f"[box_iou] not yet: {EXERCISES['box_iou'].hint}"
    assert exercises.feedback("rle_4x4", [16]).text == f"[rle_4x4] not yet: {EXERCISES['rle_4x4'].hint}"
    assert exercises.feedback("rle_4x4", [1, 2]).text == \
        "[rle_4x4] not yet: your runs cover 3 pixels, the mask has 16: every pixel is in exactly one run."


def test_answers_are_computed_from_the_inputs():
    """The same exercise with other inputs has another answer: nothing is typed in."""
    assert exercises.solution("box_iou", box_a=(0, 0, 2, 2), box_b=(1, 0, 3, 2)) == pytest.approx(1 / 3)
    assert exercises.feedback("box_iou", 0.5, box_a=(0, 0, 2, 2), box_b=(1, 0, 3, 2)).text.startswith(
        "[box_iou] not yet: you divided by the first box's area")
    two_sizes = Config().merge({"MODEL.ANCHOR_GENERATOR.SIZES": [[32, 40], [64, 80], [128, 160], [256, 320], [512, 640]]})
    assert exercises.solution("anchors_per_level", cfg=two_sizes) == 100 * 136 * 2 * 3
    assert exercises.solution("anchors_per_level", cfg=two_sizes, level="p5", input_size=(512, 512)) == 16 * 16 * 6
    mask = [[0, 1, 0, 0]] * 4
    assert exercises.solution("rle_4x4", mask=mask) == concepts.rle_by_hand(np.array(mask)) == [4, 4, 8]
    assert exercises.feedback("rle_4x4", [1, 1, 3, 1, 3, 1, 3, 1, 2], mask=mask).text.startswith(
        "[rle_4x4] not yet: you read the mask row by row")
    rgb = load_config(None, {"INPUT.FORMAT": "RGB"})
    assert exercises.solution("channel_order", input_format="RGB") == [200, 30, 10]
    assert exercises.solution("error_type", iou_same=0.6, iou_other=0.0) == "duplicate"
    assert exercises.solution("error_type", iou_same=0.0, iou_other=0.7) == "classification"
    assert exercises.solution("ap50_vs_ap", ious=[0.97, 0.99, 0.96, 1.0]) == "equal"


def test_the_demo_config_can_be_passed(project_root):
    cfg = load_config(project_root / "configs" / "demo.yaml")
    assert exercises.solution("warmup_lr", cfg=cfg, iteration=25) == concepts.learning_rate(cfg, 25)
    assert exercises.solution("lr_after_step", cfg=cfg, iteration=285) == pytest.approx(0.015 * 0.01)
    assert exercises.solution("anchors_per_level", cfg=cfg, level="p2", input_size=(160, 224)) == 40 * 56 * 3
    assert "anchor sizes [16]" in exercises.question("anchors_per_level", cfg=cfg, level="p2", input_size=(160, 224))


def test_unknown_names_and_inputs_are_notebook_bugs():
    with pytest.raises(exercises.ExerciseError, match="unknown exercise"):
        exercises.check("no_such_exercise", 1)
    with pytest.raises(exercises.ExerciseError, match="has no input 'boxa'"):
        exercises.check("box_iou", 1, boxa=(0, 0, 1, 1))


def test_ask_prints_the_question(capsys):
    exercises.ask("box_iou")
    out = capsys.readouterr().out
    assert "A = (0, 0, 4, 4)" in out and "exercises.check('box_iou', answer)" in out


def test_solutions_file_is_up_to_date(project_root):
    path = project_root / "solutions" / "SOLUTIONS.md"
    assert path.read_text(encoding="utf-8") == exercises.solutions_markdown(), \
        "regenerate it: python -m helpers.exercises"
    text = path.read_text(encoding="utf-8")
    for name in ALL:
        assert f"### `{name}`" in text
        assert f"**Answer:** `{exercises._show(exercises.solution(name))}`" in text


def test_anchor_count_uses_the_padded_input():
    kwargs = {"level": "p3", "input_size": (800, 1067)}
    assert "pad it to a multiple of 32: 800 x 1088" in exercises.question("anchors_per_level", **kwargs)
    assert exercises.solution("anchors_per_level", **kwargs) == 100 * 136 * 3
    assert exercises.feedback("anchors_per_level", 100 * 134 * 3, **kwargs).text == \
        "[anchors_per_level] not yet: the feature maps come from the PADDED input (a multiple of 32), not the resized image."


@pytest.mark.parametrize("name", exercises.names())
def test_fill_checks_the_computed_solution_only_where_no_answer_was_given(name, capsys):
    exercises.check(name, ..., fill=True)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"[{name}] (solutions on) answer filled in: ") and out[1].startswith(f"[{name}] correct")
    ex = exercises.exercise(name)
    wrong = ex.mistakes[0].answer(exercises.inputs_of(name)) if ex.mistakes else None
    if wrong is not None:
        exercises.check(name, wrong, fill=True)  # a given answer is checked as it is
        assert "correct" not in capsys.readouterr().out
