"""Reading VCR 1.0 files: typed records, and one clear line for each kind of bad data."""

from __future__ import annotations

import json

import pytest

from tests.helpers import read_lines, write_lines
from vcrnet.data import SPLITS, load_metadata, read_split
from vcrnet.data.check import check_split
from vcrnet.errors import VCRDataError


def test_reads_every_split_into_typed_records(synthetic_dir):
    for split in SPLITS:
        items = read_split(synthetic_dir, split)
        assert items and all(len(it.answer_choices) == 4 for it in items)
        assert all(len(it.rationale_choices) == 4 for it in items)
        if split == "test":
            assert all(it.answer_label is None and it.rationale_label is None for it in items)
        else:
            assert all(0 <= it.answer_label < 4 and 0 <= it.rationale_label < 4 for it in items)
    item = read_split(synthetic_dir, "train")[0]
    meta = load_metadata(synthetic_dir, item)
    assert meta.boxes.shape == (len(item.objects), 4) and meta.names == item.objects


def test_extra_keys_are_tolerated_and_only_model_keys_required(vcr_copy):
    path = vcr_copy / "test.jsonl"
    keep = (
        "annot_id",
        "objects",
        "img_fn",
        "metadata_fn",
        "question",
        "answer_choices",
        "rationale_choices",
    )
    lines = [{**{k: line[k] for k in keep}, "some_new_key": [1, 2]} for line in read_lines(path)]
    write_lines(path, lines)
    items = read_split(vcr_copy, "test")
    assert len(items) == len(lines)
    # no movie key: the image's folder is the movie (VCR's images are <movie folder>/<image>)
    assert [it.movie for it in items] == [line["img_fn"].split("/")[0] for line in lines]


def test_an_items_movie_is_its_movie_key(synthetic_dir):
    lines = read_lines(synthetic_dir / "train.jsonl")
    assert [it.movie for it in read_split(synthetic_dir, "train")] == [x["movie"] for x in lines]
    assert len({x["movie"] for x in lines}) == 3  # 24 questions, 8 images, 3 images a movie


def _set(key, value):
    def mutate(lines, root):
        lines[1][key] = value

    return mutate


def _delete(key):
    def mutate(lines, root):
        del lines[1][key]

    return mutate


def _metadata(change):
    def mutate(lines, root):
        path = root / "vcr1images" / lines[1]["metadata_fn"]
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))

    return mutate


def _remove_file(key):
    def mutate(lines, root):  # line 4 is the first question of the second image
        (root / "vcr1images" / lines[3][key]).unlink()

    return mutate


def _tag_beyond_objects(lines, root):
    lines[1]["answer_choices"][2] = ["It", "is", [len(lines[1]["objects"])], "."]


BAD_DATA = [  # (case, mutation, where, what)
    ("missing key", _delete("question"), "train.jsonl:2", "question: missing key"),
    ("missing label", _delete("answer_label"), "train.jsonl:2", "answer_label: missing key"),
    (
        "label out of range",
        _set("rationale_label", 4),
        "train.jsonl:2",
        "rationale_label: 4 is not in 0..3",
    ),
    ("label not an int", _set("answer_label", "1"), "train.jsonl:2", "answer_label:"),
    (
        "three choices",
        _set("answer_choices", [["a"], ["b"], ["c"]]),
        "train.jsonl:2",
        "answer_choices: expected 4 choices",
    ),
    (
        "tag beyond objects",
        _tag_beyond_objects,
        "train.jsonl:2",
        "answer_choices[2][2]: object index",
    ),
    ("bad token", _set("question", ["What", 3, "?"]), "train.jsonl:2", "question[1]:"),
    ("empty movie", _set("movie", ""), "train.jsonl:2", "movie: expected a non-empty string"),
    ("movie not a string", _set("movie", 7), "train.jsonl:2", "movie: expected a non-empty"),
    ("boxes disagree", _metadata(lambda m: m["boxes"].pop()), "json", "boxes: has"),
    (
        "names disagree",
        _metadata(lambda m: m["names"].reverse() or m["names"].append("dog")),
        "json",
        "names:",
    ),
    ("segms disagree", _metadata(lambda m: m["segms"].pop()), "json", "segms: has"),
    (
        "box not 5 numbers",
        _metadata(lambda m: m["boxes"][0].__setitem__(0, "x")),
        "json",
        "boxes[0]:",
    ),
    ("missing metadata key", _metadata(lambda m: m.pop("width")), "json", "width: missing key"),
    ("missing image", _remove_file("img_fn"), "train.jsonl:4", "img_fn: no such image file"),
    (
        "missing metadata",
        _remove_file("metadata_fn"),
        "train.jsonl:4",
        "metadata_fn: no such metadata file",
    ),
]


@pytest.mark.parametrize("case,mutate,where,what", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_gets_one_line_naming_file_line_and_field(
    vcr_copy, cli, case, mutate, where, what
):
    path = vcr_copy / "train.jsonl"
    lines = read_lines(path)
    mutate(lines, vcr_copy)
    write_lines(path, lines)
    with pytest.raises(VCRDataError) as err:
        check_split(vcr_copy, "train")
    assert where in str(err.value) and what in str(err.value)
    code, out, stderr = cli("data", "check", vcr_copy, "--split", "train")
    assert code == 2
    assert stderr.strip() == f"vcr-study: error: {err.value}"
    assert "\n" not in stderr.strip()


def test_malformed_json_line_names_the_line(vcr_copy, cli):
    path = vcr_copy / "val.jsonl"
    text = path.read_text().splitlines()
    text[2] = text[2][:-7]  # truncated line
    path.write_text("\n".join(text) + "\n")
    code, _, err = cli("data", "check", vcr_copy, "--split", "val")
    assert code == 2 and "val.jsonl:3: malformed JSON" in err


def test_missing_split_file(vcr_copy, cli):
    (vcr_copy / "val.jsonl").unlink()
    code, _, err = cli("data", "check", vcr_copy, "--split", "val")
    assert code == 2 and "val.jsonl: no such file" in err


def test_check_summary(synthetic_dir, cli):
    code, out, err = cli("data", "check", synthetic_dir)
    assert code == 0, err
    assert "train: 24 items, 8 images" in out
    assert "answer labels" in out and "rationale tokens" in out
    assert "none (unlabelled split)" in out  # test
