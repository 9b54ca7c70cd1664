"""The synthetic generator: VCR 1.0 layout, determinism, and the design that makes a study
meaningful (answers hinge on pixels, rationale i supports answer i)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import SMALL_SIZES, read_lines
from vcrnet.data import read_split, write_synthetic
from vcrnet.data.synth import (
    COLOUR_THINGS,
    COLOURS,
    OCCASIONS,
    QUESTION_TYPES,
    TEAMS,
    question_type,
)
from vcrnet.errors import InputError

VCR_KEYS = {
    "movie",
    "objects",
    "interesting_scores",
    "answer_likelihood",
    "img_fn",
    "metadata_fn",
    "answer_orig",
    "question_orig",
    "rationale_orig",
    "question",
    "answer_match_iter",
    "answer_sources",
    "answer_choices",
    "answer_label",
    "rationale_choices",
    "rationale_sources",
    "rationale_match_iter",
    "rationale_label",
    "img_id",
    "question_number",
    "annot_id",
    "match_fold",
    "match_index",
}
TEST_ONLY_MISSING = {
    "answer_label",
    "rationale_label",
    "answer_orig",
    "question_orig",
    "rationale_orig",
}


def test_exact_vcr_layout(synthetic_dir):
    assert sorted(p.name for p in synthetic_dir.iterdir()) == [
        "test.jsonl",
        "test_labels.json",
        "train.jsonl",
        "val.jsonl",
        "vcr1images",
    ]
    for split, count in SMALL_SIZES.items():
        lines = read_lines(synthetic_dir / f"{split}.jsonl")
        assert len(lines) == count
        expected = VCR_KEYS - TEST_ONLY_MISSING if split == "test" else VCR_KEYS
        assert all(set(line) == expected for line in lines)
        assert len({line["annot_id"] for line in lines}) == count
        for line in lines:
            assert (synthetic_dir / "vcr1images" / line["img_fn"]).read_bytes()[:2] == b"\xff\xd8"
            meta = json.loads((synthetic_dir / "vcr1images" / line["metadata_fn"]).read_text())
            assert set(meta) == {"boxes", "segms", "names", "width", "height"}
            assert meta["names"] == line["objects"]
            assert all(len(box) == 5 for box in meta["boxes"])
            assert all(len(poly) >= 3 and len(poly[0]) == 2 for s in meta["segms"] for poly in s)


def test_orig_strings_use_one_based_numbers(synthetic_dir):
    line = read_lines(synthetic_dir / "train.jsonl")[0]
    tags = [t for tok in line["question"] if isinstance(tok, list) for t in tok]
    for t in tags:
        assert str(t + 1) in line["question_orig"]


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path, synthetic_dir):
    again = write_synthetic(tmp_path / "again", seed=3, sizes=SMALL_SIZES)
    other = write_synthetic(tmp_path / "other", seed=4, sizes=SMALL_SIZES)
    assert _digest(again) == _digest(synthetic_dir)
    assert _digest(other) != _digest(synthetic_dir)


def test_refuses_to_overwrite(synthetic_dir):
    with pytest.raises(InputError, match="already exists"):
        write_synthetic(synthetic_dir)


def test_cli_synth(tmp_path, cli):
    code, out, _ = cli(
        "data", "synth", "--out", tmp_path / "d", "--train", 5, "--val", 2, "--test", 2, "--seed", 9
    )
    assert code == 0 and "5 train" in out
    assert len(read_split(tmp_path / "d", "train")) == 5


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    root = write_synthetic(
        tmp_path_factory.mktemp("many") / "d", seed=11, sizes={"train": 400, "val": 3, "test": 3}
    )
    return read_lines(root / "train.jsonl")


def _words(tokens) -> list:
    return [tuple(t) if isinstance(t, list) else t for t in tokens]


def test_vcr_shape_question_types_tags_and_templates(many):
    kinds = Counter()
    for line in many:
        words = set(_words(line["question"]))
        if (
            words & set(COLOURS)
            and "everyone" in words
            or any(isinstance(t, list) and len(t) == 4 for t in line["question"])
        ):
            kind = "who"
        elif "colour" in words:
            kind = "colour"
        elif words & {"team", "playing"}:
            kind = "team"
        elif words & {"going", "event", "dressed"}:
            kind = "occasion"
        else:
            kind = "other"
        kinds[kind] += 1
        assert question_type(line["question"]) == kind, line["question"]  # the library's reading
    assert set(kinds) == set(QUESTION_TYPES) and min(kinds.values()) > 50
    assert len({tuple(map(str, line["question"][:2])) for line in many}) >= 8  # templates
    assert any(isinstance(t, list) and len(t) > 1 for line in many for t in line["question"])
    assert any("everyone" in line["question"] for line in many)
    # several questions per image, several detections per image
    assert len({line["img_fn"] for line in many}) < len(many) / 2
    assert min(len(line["objects"]) for line in many) >= 5


def test_labels_are_balanced_so_text_alone_cannot_answer(many):
    for key in ("answer_label", "rationale_label"):
        counts = Counter(line[key] for line in many)
        assert all(70 <= counts[k] <= 130 for k in range(4)), counts
    # the four answers of a question share one template: only the value differs
    for line in many:
        lengths = {len(a) for a in line["answer_choices"]}
        shapes = {tuple(isinstance(t, list) for t in a) for a in line["answer_choices"]}
        assert len(shapes) == 1 or len(lengths) > 1  # multi-word values change the length only


def _supporting_phrases(answer: list, who: bool) -> list:
    """What a rationale that supports this answer must contain."""
    if who:  # the answers differ by object: its rationale names that object
        return [next(t for t in answer if isinstance(t, list))]
    text = " ".join(map(str, answer))
    for team in TEAMS:  # team: its rationale names the answer's team (and no colour)
        if f" {team} " in f" {text} ":
            return [f" {team} "]
    for colour, occasion in OCCASIONS.items():
        if occasion in text:
            return [f" {colour} "]
    for colour in COLOURS:
        if f" {colour} " in f" {text} ":
            return list(COLOUR_THINGS[colour])
    raise AssertionError(f"no value in {answer}")


def _contains(rationale: list, phrase) -> bool:
    if isinstance(phrase, list):
        return phrase in rationale
    return phrase in f" {' '.join(map(str, rationale))} "


def test_right_rationale_is_linked_to_the_right_answer(many):
    """The gold rationale supports the gold answer; a wrong answer is supported by a wrong
    rationale (or, for a true-but-irrelevant fact, by none)."""
    for line in many:
        answers, rationales = line["answer_choices"], line["rationale_choices"]
        tags = {str([t for t in answer if isinstance(t, list)]) for answer in answers}
        for a, answer in enumerate(answers):
            phrases = _supporting_phrases(answer, who=len(tags) > 1)
            support = [
                r for r, rat in enumerate(rationales) if any(_contains(rat, p) for p in phrases)
            ]
            if a == line["answer_label"]:
                assert line["rationale_label"] in support, line
            else:
                assert line["rationale_label"] not in support, line


def test_test_labels_are_kept_beside_the_unlabelled_test_split(synthetic_dir):
    from vcrnet.data.records import held_out_labels, with_held_out_labels

    items = read_split(synthetic_dir, "test")
    assert all(it.answer_label is None for it in items)  # as VCR's test.jsonl
    labels = held_out_labels(synthetic_dir, "test")
    assert set(labels) == {it.annot_id for it in items}
    assert all(0 <= a < 4 and 0 <= r < 4 for a, r in labels.values())
    assert held_out_labels(synthetic_dir, "val") is None  # labelled splits keep theirs inline
    labelled = with_held_out_labels(synthetic_dir, "test", items)
    assert [(it.answer_label, it.rationale_label) for it in labelled] == [
        tuple(labels[it.annot_id]) for it in items
    ]
