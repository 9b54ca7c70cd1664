"""The synthetic data hides its labels where real VCR's model inputs would not show them, and its
``team`` questions make the rationale depend on the answer (``vcrnet.data.synth``, point (b)).

Labels of the test split are recovered from the pixels (the colour inside each object's polygon),
so the unlabeled lines are checked for leaks too.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.helpers import read_lines
from vcrnet.data import write_synthetic
from vcrnet.data.synth import COLOUR_THINGS, COLOURS, OCCASIONS, TEAMS

BOOKKEEPING = ("answer_match_iter", "answer_sources", "rationale_match_iter", "rationale_sources")
SIZES = {"train": 400, "val": 100, "test": 400}
CHANCE, SLACK = 0.25, 0.09  # about 4 standard deviations of a 25% hit rate over 400 lines


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("faithful") / "d", seed=5, sizes=SIZES)


def _text(tokens: list) -> str:
    return " " + " ".join(map(str, tokens)) + " "


def _is_team(line: dict) -> bool:
    return any(f" {team} " in _text(a) for a in line["answer_choices"] for team in TEAMS)


# --- labels from the pixels -----------------------------------------------------------------


def _colour_of(image: Image.Image, polygons: list) -> str:
    mask = Image.new("L", image.size, 0)
    for polygon in polygons:
        ImageDraw.Draw(mask).polygon([tuple(p) for p in polygon], fill=1)
    rgb = np.median(np.asarray(image, np.float32)[np.asarray(mask, bool)], axis=0)
    return min(COLOURS, key=lambda c: float(np.sum((np.array(COLOURS[c]) - rgb) ** 2)))


def _claim(answer: list, question: list) -> tuple[int, str]:
    """The (object, colour) an answer asserts; a ``who`` answer takes the question's colour."""
    (obj,) = next(t for t in answer if isinstance(t, list))
    for colour, occasion in OCCASIONS.items():
        if f" {occasion} " in _text(answer):
            return obj, colour
    for words in (answer, question):
        colours = [c for c in COLOURS if f" {c} " in _text(words)]
        if colours:
            return obj, colours[0]
    raise AssertionError(f"no colour in {answer}")


def _pixel_label(root: Path, line: dict) -> int | None:
    """The one answer whose claim the pixels bear out, or None if not exactly one does."""
    meta = json.loads((root / "vcr1images" / line["metadata_fn"]).read_text())
    image = Image.open(root / "vcr1images" / line["img_fn"]).convert("RGB")
    true = []
    for a, answer in enumerate(line["answer_choices"]):
        obj, colour = _claim(answer, line["question"])
        if _colour_of(image, meta["segms"][obj]) == colour:
            true.append(a)
    return true[0] if len(true) == 1 else None


def test_the_pixels_decide_the_answer(data):
    """Property (a), and the oracle the test split's leak check relies on."""
    lines = read_lines(data / "train.jsonl")
    agree = sum(_pixel_label(data, line) == line["answer_label"] for line in lines)
    assert agree >= 0.97 * len(lines), agree


# --- no label in the bookkeeping ------------------------------------------------------------


def _guesses(values: list[int], line: dict) -> dict[str, int | None]:
    """Ways a model could read a position off a bookkeeping field."""
    guesses: dict[str, int | None] = {
        "argmin": int(np.argmin(values)),
        "argmax": int(np.argmax(values)),
        "last argmin": 3 - int(np.argmin(values[::-1])),
        "last argmax": 3 - int(np.argmax(values[::-1])),
        "nearest the line's index": int(np.argmin([abs(v - line["match_index"]) for v in values])),
    }
    for special in range(4):
        guesses[f"position of {special}"] = values.index(special) if special in values else None
    counts = Counter(values)
    unique = [i for i, v in enumerate(values) if counts[v] == 1]
    guesses["the one unique value"] = unique[0] if len(unique) == 1 else None
    return guesses


def _assert_no_leak(lines: list[dict], labels: dict[str, list[int]]) -> None:
    for field in BOOKKEEPING:
        assert all(
            len(line[field]) == 4 and all(type(v) is int for v in line[field]) for line in lines
        ), field
        hits: dict[tuple[str, str], int] = defaultdict(int)
        for i, line in enumerate(lines):
            for rule, guess in _guesses(line[field], line).items():
                for name, label in labels.items():
                    hits[rule, name] += guess == label[i]
        for (rule, name), count in hits.items():
            rate = count / len(lines)
            assert rate <= CHANCE + SLACK, f"{field}: {rule} finds {name} {rate:.2f} of the time"


def test_bookkeeping_does_not_reveal_the_labels(data):
    lines = read_lines(data / "train.jsonl") + read_lines(data / "val.jsonl")
    _assert_no_leak(
        lines,
        {
            "answer_label": [line["answer_label"] for line in lines],
            "rationale_label": [line["rationale_label"] for line in lines],
        },
    )


def test_test_lines_do_not_reveal_the_answer(data):
    lines = read_lines(data / "test.jsonl")
    labelled = [(line, _pixel_label(data, line)) for line in lines]
    labelled = [(line, label) for line, label in labelled if label is not None]
    assert len(labelled) >= 0.97 * len(lines)
    _assert_no_leak(
        [line for line, _ in labelled],
        {"answer (from the pixels)": [label for _, label in labelled]},
    )


# --- team questions: the rationale only through the answer ----------------------------------


def _team_of(tokens: list) -> str:
    (team,) = [t for t in TEAMS if f" {t} " in _text(tokens)]
    return team


def test_team_questions_take_about_a_quarter(data):
    lines = read_lines(data / "train.jsonl")
    share = sum(map(_is_team, lines)) / len(lines)
    assert 0.18 <= share <= 0.32, share


def test_team_rationale_is_linked_to_one_answer_and_the_right_one(data):
    """Each rationale names the team of exactly one answer (a bijection), and the gold rationale
    names the gold answer's team: given the gold answer, text alone finds it."""
    teams = [
        line
        for split in ("train", "val")
        for line in read_lines(data / f"{split}.jsonl")
        if _is_team(line)
    ]
    assert len(teams) > 80
    for line in teams:
        answer_teams = [_team_of(a) for a in line["answer_choices"]]
        rationale_teams = [_team_of(r) for r in line["rationale_choices"]]
        assert sorted(answer_teams) == sorted(rationale_teams) and len(set(answer_teams)) == 4
        assert rationale_teams[line["rationale_label"]] == answer_teams[line["answer_label"]]


def test_team_rationales_are_alike_without_the_answer(data):
    """Without the answer nothing picks the right team rationale: the four differ only in the
    team's name, none names a colour or a coloured thing (nothing to check in the pixels), the
    question names no team, and no team keeps one colour across questions."""
    visual = [
        *COLOURS,
        *(t for things in COLOUR_THINGS.values() for t in things),
        *OCCASIONS.values(),
    ]
    colours_of_team: dict[str, Counter] = defaultdict(Counter)
    gold_team_slot = Counter()
    lines = [
        line
        for split in ("train", "val", "test")
        for line in read_lines(data / f"{split}.jsonl")
        if _is_team(line)
    ]
    for line in lines:
        masked = {re.sub("|".join(TEAMS), "TEAM", _text(r)) for r in line["rationale_choices"]}
        assert len(masked) == 1, line["rationale_choices"]
        assert not any(
            f" {word} " in _text(r) for r in line["rationale_choices"] for word in visual
        )
        assert not any(f" {team} " in _text(line["question"]) for team in TEAMS)
        for answer in line["answer_choices"]:
            (colour,) = [c for c in COLOURS if f" {c} " in _text(answer)]
            colours_of_team[_team_of(answer)][colour] += 1
        if "rationale_label" in line:
            gold_team_slot[
                TEAMS.index(_team_of(line["rationale_choices"][line["rationale_label"]]))
            ] += 1
    for team, colours in colours_of_team.items():
        assert max(colours.values()) <= 0.35 * sum(colours.values()), (team, colours)
    assert max(gold_team_slot.values()) <= 3 * sum(gold_team_slot.values()) / len(TEAMS)


def test_team_questions_are_deterministic(tmp_path):
    sizes = {"train": 30, "val": 3, "test": 6}
    one = write_synthetic(tmp_path / "one", seed=7, sizes=sizes)
    two = write_synthetic(tmp_path / "two", seed=7, sizes=sizes)
    for split in sizes:
        assert (one / f"{split}.jsonl").read_bytes() == (two / f"{split}.jsonl").read_bytes()
    assert any(_is_team(line) for line in read_lines(one / "train.jsonl"))
