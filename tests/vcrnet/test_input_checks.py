"""Bad input refused up front with one line: config ranges, text that is not UTF-8, empty
splits, probability CSVs, float32 boxes, the canvas size and checkpoint field types."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import typing

import pytest
import torch

from tests.helpers import SMALL_SETTINGS
from vcrnet.config import _BACKBONE_OVERRIDES, TrainConfig
from vcrnet.data import load_metadata, read_split, require_splits
from vcrnet.data.check import check_split
from vcrnet.data.records import held_out_labels
from vcrnet.errors import InputError, VCRDataError
from vcrnet.features import settings as feature_settings
from vcrnet.features.settings import MIN_IMAGE_SIDE, FeatureChoice, FeatureSettings
from vcrnet.leaderboard import COLUMNS, read_csv, score_csv, write_csv
from vcrnet.model import PRESETS
from vcrnet.train import load_checkpoint, load_model

# --- 1. every TrainConfig setting has a range --------------------------------------------------

# field: values it must refuse (a field added without a range has no row: the test fails)
REFUSED = {
    "tau_start": [0.0, -1.0, "5"],
    "tau_end": [0.0, -0.5],
    "anneal_epochs": [-1, 2.5],
    "anneal": ["cosine", 1],
    "anneal_per": ["batch"],
    "straight_through": ["yes", 1, None],
    "num_samples": [0, 1.5],
    "estimator": ["sampled"],
    "direct16_variant": ["both"],
    "correct_answer_rate": [-0.1, 1.1],
    "method": ["bogus", None],
    "loss_ratio": [0.0, -1.0],
    "preset": ["huge"],
    "hidden": [0, -8, 2.5, True],
    "object_dim": [0, -1],
    "mlp_dim": [0, -1],
    "object_dropout": [-0.1, 1.0, 1.5],
    "rnn_dropout": [-0.1, 1.0],
    "mlp_dropout": [-0.1, 1.0],
    "r2c_init": ["true", 2],
    "zero_object_features": ["false", 0, None],
    "normalize_objects": ["true", 1],
    "epochs": [0, 2.0],
    "batch_size": [0, -4],
    "lr": [0.0, -1e-3],
    "weight_decay": [-1e-4],
    "grad_clip": [0.0, -1.0],
    "lr_factor": [0.0, 1.0, 1.5, -0.5],
    "lr_patience": [-1, 0.5],
    "lr_cooldown": [-1],
    "bucket_batches": [-1],
    "patience": [0, -1],
    "seed": [-1, 2**32, "0"],
    "dev_fraction": [0.0, 0.6],
    "dev_seed": [-1, 2**32],
    "objective": ["dev_joint_nll", "val_q2ar", "q2ar", None],
    "tf32": ["true", 1, None],
}
FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
HINTS = typing.get_type_hints(TrainConfig)
FLOAT_FIELDS = [n for n in FIELDS if float in (typing.get_args(HINTS[n]) or (HINTS[n],))]


@pytest.mark.parametrize("name", FIELDS)
def test_every_config_field_refuses_a_value_out_of_its_range(name):
    assert name in REFUSED, f"{name} has no refused value: give it a range in _checks"
    for value in REFUSED[name]:
        with pytest.raises(InputError) as err:
            TrainConfig(**{name: value})
        message = str(err.value)
        assert name in message.split(":")[0] and "must be" in message, message
        assert len(message.splitlines()) == 1


@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_every_float_setting_refuses_nan_and_infinities(name):
    for value in (math.nan, math.inf, -math.inf):
        with pytest.raises(InputError, match=rf"{name}\b.*: must be"):
            TrainConfig(**{name: value})


def test_the_float_fields_are_found():
    assert {"lr", "lr_factor", "tau_start", "rnn_dropout", "grad_clip"} <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_defaults_and_every_preset_pass(name):
    TrainConfig()
    TrainConfig(preset=name)
    spelled_out = {k: getattr(PRESETS[name], k) for k in _BACKBONE_OVERRIDES}
    assert TrainConfig(preset=name, **spelled_out).backbone() == PRESETS[name]


def test_the_edges_of_each_range_pass():
    TrainConfig(
        object_dropout=0.0,
        rnn_dropout=0.99,
        lr_factor=0.999,
        weight_decay=0.0,
        lr_patience=0,
        lr_cooldown=0,
        patience=1,
        seed=2**32 - 1,
        dev_seed=0,
        hidden=1,
        object_dim=1,
        mlp_dim=1,
        loss_ratio=4,  # an int for a float setting
        r2c_init=None,
    )


def test_a_set_value_out_of_range_is_one_line_naming_the_key():
    with pytest.raises(InputError) as err:
        TrainConfig.from_dict({"lr_factor": "1.5"}, where="--set")
    assert str(err.value) == "--set: lr_factor: must be in (0, 1) (got 1.5)"  # where it was given
    with pytest.raises(InputError) as err:
        TrainConfig.from_dict({"lr": "nan"}, where="--set")
    assert str(err.value) == "--set: lr: must be a finite number (got nan)"


# --- 2. files that are not UTF-8 -----------------------------------------------------------------


def _latin1_on_line(path, number):
    lines = path.read_bytes().splitlines(keepends=True)
    lines[number - 1] = lines[number - 1].replace(b'"', b'"caf\xe9 ', 1)
    path.write_bytes(b"".join(lines))


def test_a_split_with_a_latin1_byte_names_its_file_and_line(vcr_copy):
    path = vcr_copy / "train.jsonl"
    _latin1_on_line(path, 3)
    for read in (read_split, check_split):
        with pytest.raises(VCRDataError) as err:
            read(vcr_copy, "train")
        assert str(err.value) == f"{path}:3: not UTF-8"


def test_a_binary_split_is_not_utf8(vcr_copy):
    path = vcr_copy / "val.jsonl"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40)  # a JPEG
    with pytest.raises(VCRDataError) as err:
        read_split(vcr_copy, "val")
    assert str(err.value) == f"{path}:1: not UTF-8"
    with pytest.raises(VCRDataError, match="not UTF-8"):
        require_splits(vcr_copy, ("val",))


def test_image_metadata_and_held_out_labels_that_are_not_utf8(vcr_copy, tmp_path):
    item = read_split(vcr_copy, "train")[0]
    meta = vcr_copy / "vcr1images" / item.metadata_fn
    meta.write_bytes(meta.read_bytes().replace(b'"', b'"\xff', 1))
    with pytest.raises(VCRDataError) as err:
        load_metadata(vcr_copy, item)
    assert str(err.value) == f"{meta}:1: not UTF-8"
    labels = vcr_copy / "test_labels.json"
    labels.write_bytes(b'{"test-0": [0, 1],\n "caf\xe9": [1, 2]}')
    with pytest.raises(VCRDataError) as err:
        held_out_labels(vcr_copy, "test")
    assert str(err.value) == f"{labels}:2: not UTF-8"


def test_a_binary_csv_is_not_utf8(tmp_path):
    path = _softmax_csv(tmp_path, 3)
    path.write_bytes(path.read_bytes() + b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(InputError) as err:
        read_csv(path)
    assert str(err.value) == f"{path}:5: not UTF-8"


# --- 3. a split with no items --------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n  \n"], ids=["empty", "blank lines"])
def test_a_split_with_no_items_is_refused_wherever_it_is_read(vcr_copy, text):
    path = vcr_copy / "train.jsonl"
    path.write_text(text)
    for check in (
        lambda: read_split(vcr_copy, "train"),
        lambda: check_split(vcr_copy, "train"),
        lambda: require_splits(vcr_copy, ("val", "train")),
    ):
        with pytest.raises(VCRDataError) as err:
            check()
        assert str(err.value) == f"{path}: no items"


def test_extraction_of_an_empty_split_writes_nothing(vcr_copy, tmp_path):
    from vcrnet.features.extract import extract_splits

    (vcr_copy / "val.jsonl").write_text("\n")
    cache = tmp_path / "cache"
    with pytest.raises(VCRDataError, match=r"val\.jsonl: no items$"):
        extract_splits(vcr_copy, ("train", "val"), cache, SMALL_SETTINGS, progress=False)
    assert not cache.exists() or not any(cache.rglob("*"))


def test_data_check_exits_2_on_an_empty_split(vcr_copy, cli):
    (vcr_copy / "val.jsonl").write_text("")
    code, _, err = cli("data", "check", vcr_copy, "--split", "val")
    assert code == 2 and err.strip().splitlines()[-1].endswith(
        f"{vcr_copy / 'val.jsonl'}: no items"
    )


# --- 4. probability CSVs that are not probabilities ----------------------------------------------


def _softmax_csv(tmp_path, n, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    answers = torch.softmax(scale * torch.randn(n, 4, generator=g), -1)
    rationales = torch.softmax(scale * torch.randn(n, 4, 4, generator=g), -1)
    return write_csv(tmp_path / f"p{seed}.csv", [f"val-{i}" for i in range(n)], answers, rationales)


def _set_cell(path, line, column, value):
    rows = list(csv.reader(path.open(newline="")))
    rows[line - 1][COLUMNS.index(column)] = value
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.1", "1.5"])
def test_a_cell_that_is_not_a_probability_names_line_and_column(tmp_path, value):
    path = _softmax_csv(tmp_path, 4)
    _set_cell(path, 3, "rationale_conditioned_on_a2_1", value)
    with pytest.raises(InputError) as err:
        read_csv(path)
    assert str(err.value) == (
        f"{path}:3: rationale_conditioned_on_a2_1: {float(value)!r} is not a probability in [0, 1]"
    )


def test_rows_that_do_not_sum_to_one_are_refused(tmp_path):
    path = _softmax_csv(tmp_path, 4)
    _set_cell(path, 2, "answer_0", "0")
    with pytest.raises(InputError, match=rf"^{path}:2: answer_0\.\.3 sum to 0\.\d+, not 1$"):
        read_csv(path, sums=True)
    path = _softmax_csv(tmp_path, 4, seed=1)
    _set_cell(path, 5, "rationale_conditioned_on_a3_2", "0.999")
    with pytest.raises(InputError, match=rf"^{path}:5: rationale_conditioned_on_a3_0\.\.3 sum to "):
        read_csv(path, sums=True)
    uniform = write_csv(
        tmp_path / "u.csv", ["a"], torch.full((1, 4), 0.3), torch.full((1, 4, 4), 0.25)
    )
    with pytest.raises(InputError, match="answer_0..3 sum to 1.2, not 1"):
        score_csv(uniform, [])


@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0, 300.0])
def test_write_csv_of_a_softmax_always_reads_back(tmp_path, scale):
    for seed in range(3):
        ids, answers, rationales = read_csv(_softmax_csv(tmp_path, 500, scale, seed), sums=True)
        assert len(ids) == 500 and answers.shape == (500, 4) and rationales.shape == (500, 4, 4)


# --- 5. boxes that overflow float32 ---------------------------------------------------------------


def _change_metadata(root, change):
    item = read_split(root, "train")[0]
    path = root / "vcr1images" / item.metadata_fn
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    return item, path


@pytest.mark.parametrize("value", [1e39, -3.5e38, math.nan, math.inf])
def test_a_box_beyond_float32_is_refused_naming_the_row(vcr_copy, value):
    item, path = _change_metadata(vcr_copy, lambda m: m["boxes"][1].__setitem__(2, value))
    with pytest.raises(VCRDataError) as err:
        load_metadata(vcr_copy, item)
    assert str(err.value) == f"{path}: boxes[1]: {value!r} is not a finite float32 number"
    with pytest.raises(VCRDataError, match=r"boxes\[1\]"):
        check_split(vcr_copy, "train")


def test_a_polygon_point_beyond_float32_is_refused(vcr_copy):
    def change(meta):
        meta["segms"][0] = [[[0, 0], [1e39, 0], [5, 5]]]

    item, path = _change_metadata(vcr_copy, change)
    with pytest.raises(VCRDataError) as err:
        load_metadata(vcr_copy, item)
    assert str(err.value) == f"{path}: segms[0][0]: a point is not a finite float32 number"


# --- 6. the canvas has an upper bound -------------------------------------------------------------


def test_the_canvas_bounds_admit_r2cs_and_refuse_a_huge_one():
    MAX_IMAGE_SIDE = feature_settings.MAX_IMAGE_SIDE  # noqa: N806 - the module's constant
    assert MIN_IMAGE_SIDE <= 384 and 768 <= MAX_IMAGE_SIDE
    FeatureSettings(image_size=(768, 384))
    FeatureSettings(image_size=(MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    FeatureChoice(image_size=(MAX_IMAGE_SIDE, MIN_IMAGE_SIDE))
    with pytest.raises(InputError) as err:
        FeatureSettings(image_size=(30000, 30000))
    assert str(err.value) == (
        f"image_size 30000x30000: both sides must be at most {MAX_IMAGE_SIDE} pixels"
    )
    with pytest.raises(InputError, match=f"at most {MAX_IMAGE_SIDE} pixels"):
        FeatureSettings.from_dict({"image_size": "768x30000"})
    with pytest.raises(InputError) as err:
        FeatureChoice(image_size=(768, MAX_IMAGE_SIDE + 1))
    assert str(err.value) == (
        f"--image-size 768x{MAX_IMAGE_SIDE + 1}: both sides must be at most {MAX_IMAGE_SIDE} pixels"
    )
    with pytest.raises(InputError) as err:
        FeatureChoice(image_size=(16, 384))
    assert str(err.value) == (
        f"--image-size 16x384: both sides must be at least {MIN_IMAGE_SIDE} pixels"
    )


# --- 7. checkpoints whose fields have the wrong types ---------------------------------------------

GOOD = {"config": {}, "text_dim": 12, "model": {"w": torch.zeros(2)}, "epoch": 1, "extra": {}}
BAD_CHECKPOINTS = [  # (change, field, problem)
    ({"text_dim": "12"}, "text_dim", "expected a positive int, got '12'"),
    ({"text_dim": 0}, "text_dim", "expected a positive int, got 0"),
    ({"text_dim": True}, "text_dim", "expected a positive int, got True"),
    ({"config": [1, 2]}, "config", "expected a dict, got list"),
    ({"model": [torch.zeros(2)]}, "model", "expected a dict of tensors, got list"),
    ({"model": {"w": 3}}, "model", "'w' is not a tensor (int)"),
    ({"epoch": 1.5}, "epoch", "expected an int of 0 or more, got 1.5"),
    ({"epoch": -1}, "epoch", "expected an int of 0 or more, got -1"),
    ({"extra": "x"}, "extra", "expected a dict, got str"),
]


@pytest.mark.parametrize(
    "change,field,problem", BAD_CHECKPOINTS, ids=[c[1] for c in BAD_CHECKPOINTS]
)
def test_a_checkpoint_field_of_the_wrong_type_is_one_line(
    tmp_path, monkeypatch, change, field, problem
):
    path = tmp_path / "c.pt"
    torch.save({**GOOD, **change}, path)
    with pytest.raises(InputError) as err:
        load_checkpoint(path)
    assert str(err.value) == f"{path}: {field}: {problem}"

    def build(*args):
        raise AssertionError("a model was built")

    monkeypatch.setattr("vcrnet.train.build", build)
    with pytest.raises(InputError, match=f"{field}: "):
        load_model(path)


def test_a_checkpoint_without_extra_still_loads(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({k: v for k, v in GOOD.items() if k != "extra"}, path)
    assert load_checkpoint(path)["text_dim"] == 12
