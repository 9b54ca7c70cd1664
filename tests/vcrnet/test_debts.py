"""The vcrnet debts: metric names without torch, score_csv, first_line, typed config parsing."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields

import pytest
import torch

import vcrnet.leaderboard
import vcrnet.train
from tests.helpers import ROOT
from vcrnet.config import TrainConfig, _convert, _types
from vcrnet.data import read_split, write_synthetic
from vcrnet.errors import InputError, first_line
from vcrnet.leaderboard import score_csv, write_csv
from vcrnet.metrics import DECODINGS, EVALUATED, OBJECTIVE, REPORTED


def test_the_metric_names_import_without_torch_or_numpy():
    """A fresh interpreter: the harness can read the names without loading torch."""
    code = (
        "import sys, vcrnet.metrics, vcrnet.errors; "
        "print(*sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []


def test_the_names_are_one_set_of_constants():
    assert vcrnet.leaderboard.DECODINGS is DECODINGS
    assert (vcrnet.train.OBJECTIVE, vcrnet.train.REPORTED) == (OBJECTIVE, REPORTED)
    assert OBJECTIVE == "dev_q2ar" and REPORTED == "val_q2ar"
    assert EVALUATED == (*DECODINGS, "joint_nll")
    assert len(set(EVALUATED)) == len(EVALUATED) == 10


def test_decodings_are_the_leaderboard_tables_rows_in_order():
    rows = re.findall(r"^``(\w+)``", vcrnet.leaderboard.__doc__, re.MULTILINE)
    assert tuple(rows) == DECODINGS


def test_evaluate_returns_exactly_the_evaluated_names(monkeypatch):
    """``evaluate`` itself, on random predictions (a real model's scores are checked by name in
    tests/vcrnet/test_train.py; here without the cost of extracting features and training)."""
    torch.manual_seed(0)
    n = 12
    fake = vcrnet.train.Predictions(
        answer_logits=torch.randn(n, 4),
        pair_logits=torch.randn(n, 4, 4),
        mixture_logits=torch.randn(n, 4),
        answer_labels=torch.randint(0, 4, (n,)),
        rationale_labels=torch.randint(0, 4, (n,)),
    )
    monkeypatch.setattr(vcrnet.train, "predict", lambda *args, **kwargs: fake)
    metrics = vcrnet.train.evaluate(None, None)
    assert sorted(metrics) == sorted(EVALUATED)
    logged = {f"{split}_{k}" for split in ("dev", "val") for k in metrics}
    assert {f"{split}_{k}" for split in ("dev", "val") for k in DECODINGS} < logged
    assert {OBJECTIVE, REPORTED} < logged


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    root = write_synthetic(
        tmp_path_factory.mktemp("debts") / "vcr", seed=3, sizes={"train": 24, "val": 9, "test": 9}
    )
    return root, read_split(root, "val")


def _perfect(items) -> tuple[torch.Tensor, torch.Tensor]:
    answers = torch.full((len(items), 4), 0.1)
    rationales = torch.full((len(items), 4, 4), 0.1)
    for i, it in enumerate(items):
        answers[i, it.answer_label] = 0.7
        rationales[i, :, it.rationale_label] = 0.7
    return answers, rationales


def test_score_csv_scores_a_perfect_csv_one_in_any_row_order(val_split, tmp_path):
    _, items = val_split
    answers, rationales = _perfect(items)
    order = list(reversed(range(len(items))))  # rows are matched by annot_id, not position
    path = write_csv(
        tmp_path / "val.csv", [items[i].annot_id for i in order], answers[order], rationales[order]
    )
    assert score_csv(path, items) == {"q2a": 1.0, "qa2r": 1.0, "qa2r_pred": 1.0, "q2ar": 1.0}
    wrong = answers.roll(1, dims=1)  # every answer's argmax moved off its label
    path = write_csv(tmp_path / "wrong.csv", [it.annot_id for it in items], wrong, rationales)
    metrics = score_csv(path, items)
    assert metrics["q2a"] == metrics["q2ar"] == 0.0 and metrics["qa2r"] == 1.0


def test_score_csv_refuses_a_bad_csv_and_an_unlabelled_split(val_split, tmp_path):
    root, items = val_split
    answers, rationales = _perfect(items)
    short = write_csv(
        tmp_path / "short.csv", [it.annot_id for it in items[1:]], answers[1:], rationales[1:]
    )
    with pytest.raises(InputError, match=f"no row for {items[0].annot_id}"):
        score_csv(short, items)
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("not,a,leaderboard\n")
    with pytest.raises(InputError, match="expected the 21 leaderboard columns"):
        score_csv(garbage, items)
    with pytest.raises(InputError, match="no such file"):
        score_csv(tmp_path / "absent.csv", items)
    test_items = read_split(root, "test")
    assert test_items[0].answer_label is None
    with pytest.raises(InputError) as err:
        score_csv(short, test_items)
    assert str(err.value) == f"{short}: the split has no labels to score against"


def test_first_line_is_one_short_line_of_any_error():
    assert first_line(ValueError("\n  \n  first problem  \nsecond line")) == "first problem"
    assert first_line(KeyboardInterrupt()) == "KeyboardInterrupt"
    assert first_line(RuntimeError("  \n \n")) == "RuntimeError"
    assert first_line(InputError("x" * 500)) == "x" * 500  # cut only where asked
    long = first_line(InputError("x" * 500), limit=160)
    assert long == "x" * 157 + "..." and len(long) == 160
    assert first_line(InputError("y" * 30), limit=10) == "yyyyyyy..."
    assert first_line(InputError("y" * 10), limit=10) == "y" * 10


class Err(str):
    """The InputError message a string gave."""


# field: what "none", "7" and "bad" became with where="k", recorded from the _convert that parsed
# the annotation strings (before typing.get_type_hints): a value, or an Err with the message
OLD_CONVERT = {
    "tau_start": (Err("k: 'none' is not a float"), 7.0, Err("k: 'bad' is not a float")),
    "tau_end": (Err("k: 'none' is not a float"), 7.0, Err("k: 'bad' is not a float")),
    "anneal_epochs": (Err("k: 'none' is not an int"), 7, Err("k: 'bad' is not an int")),
    "anneal": ("none", "7", "bad"),
    "anneal_per": ("none", "7", "bad"),
    "straight_through": (
        Err("k: 'none' is not a bool"),
        Err("k: '7' is not a bool"),
        Err("k: 'bad' is not a bool"),
    ),
    "num_samples": (Err("k: 'none' is not an int"), 7, Err("k: 'bad' is not an int")),
    "estimator": ("none", "7", "bad"),
    "direct16_variant": ("none", "7", "bad"),
    "correct_answer_rate": (Err("k: 'none' is not a float"), 7.0, Err("k: 'bad' is not a float")),
    "method": ("none", "7", "bad"),
    "loss_ratio": (Err("k: 'none' is not a float"), 7.0, Err("k: 'bad' is not a float")),
    "preset": ("none", "7", "bad"),
    "hidden": (None, 7, Err("k: 'bad' is not an int")),
    "object_dim": (None, 7, Err("k: 'bad' is not an int")),
    "mlp_dim": (None, 7, Err("k: 'bad' is not an int")),
    "object_dropout": (None, 7.0, Err("k: 'bad' is not a float")),
    "rnn_dropout": (None, 7.0, Err("k: 'bad' is not a float")),
    "mlp_dropout": (None, 7.0, Err("k: 'bad' is not a float")),
    "r2c_init": (None, Err("k: '7' is not a bool"), Err("k: 'bad' is not a bool")),
    "zero_object_features": (
        Err("k: 'none' is not a bool"),
        Err("k: '7' is not a bool"),
        Err("k: 'bad' is not a bool"),
    ),
    "normalize_objects": (
        Err("k: 'none' is not a bool"),
        Err("k: '7' is not a bool"),
        Err("k: 'bad' is not a bool"),
    ),
    "epochs": (Err("k: 'none' is not an int"), 7, Err("k: 'bad' is not an int")),
    "batch_size": (Err("k: 'none' is not an int"), 7, Err("k: 'bad' is not an int")),
    "lr": (Err("k: 'none' is not a float"), 7.0, Err("k: 'bad' is not a float")),
    "weight_decay": (Err("k: 'none' is not a float"), 7.0, Err("k: 'bad' is not a float")),
    "grad_clip": (Err("k: 'none' is not a float"), 7.0, Err("k: 'bad' is not a float")),
    "lr_factor": (Err("k: 'none' is not a float"), 7.0, Err("k: 'bad' is not a float")),
    "lr_patience": (Err("k: 'none' is not an int"), 7, Err("k: 'bad' is not an int")),
    "lr_cooldown": (Err("k: 'none' is not an int"), 7, Err("k: 'bad' is not an int")),
    "bucket_batches": (Err("k: 'none' is not an int"), 7, Err("k: 'bad' is not an int")),
    "patience": (Err("k: 'none' is not an int"), 7, Err("k: 'bad' is not an int")),
    "seed": (Err("k: 'none' is not an int"), 7, Err("k: 'bad' is not an int")),
    "dev_fraction": (Err("k: 'none' is not a float"), 7.0, Err("k: 'bad' is not a float")),
    "dev_seed": (Err("k: 'none' is not an int"), 7, Err("k: 'bad' is not an int")),
    "objective": ("none", "7", "bad"),
    "tf32": (
        Err("k: 'none' is not a bool"),
        Err("k: '7' is not a bool"),
        Err("k: 'bad' is not a bool"),
    ),
}


def test_the_table_holds_every_field():
    assert list(OLD_CONVERT) == [f.name for f in fields(TrainConfig)]


@pytest.mark.parametrize("name", list(OLD_CONVERT))
def test_a_set_string_converts_by_the_fields_type_as_before(name):
    for text, expected in zip(("none", "7", "bad"), OLD_CONVERT[name]):
        if isinstance(expected, Err):
            with pytest.raises(InputError) as err:
                _convert(text, _types(TrainConfig)[name], "k")
            assert str(err.value) == expected
        else:
            got = _convert(text, _types(TrainConfig)[name], "k")
            assert got == expected and type(got) is type(expected)


def test_from_dict_converts_by_type_and_names_the_key():
    config = TrainConfig.from_dict(
        {"hidden": "None", "lr": "1e-3", "r2c_init": "yes", "epochs": 3, "method": "gumbel"}
    )
    assert (config.hidden, config.lr, config.r2c_init, config.epochs) == (None, 1e-3, True, 3)
    with pytest.raises(InputError, match=r"^config: hidden: '2.5' is not an int$"):
        TrainConfig.from_dict({"hidden": "2.5"})
    with pytest.raises(InputError, match=r"^run.yaml: straight_through: '' is not a bool$"):
        TrainConfig.from_dict({"straight_through": ""}, where="run.yaml")
