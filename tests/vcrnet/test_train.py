"""Training: exact resume, divergence, the train/predict/evaluate commands, the CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from vcrnet.config import TrainConfig
from vcrnet.errors import InputError
from vcrnet.features import CachedVCRDataset, dev_split
from vcrnet.leaderboard import COLUMNS, read_csv, score, write_csv
from vcrnet.train import (
    BEST,
    BEST_KEYS,
    CHECKPOINT,
    DEV_ITEMS,
    OBJECTIVE,
    TrainingDiverged,
    fit,
    load_checkpoint,
    load_model,
)

TIMING = ("train_items_per_s", "train_seconds", "epoch_seconds")
# every epoch's metrics, for every method (study/ reads the val_ ones by name)
EVALUATED = (
    "joint_nll",
    "q2a",
    "qa2r",
    "qa2r_pred",
    "q2ar",
    "qa2r_mixture",
    "q2ar_mixture",
    "qa2r_joint16",
    "q2ar_joint16",
    "q2a_and_joint16",
)
METRIC_NAMES = {
    "epoch",
    "lr",
    *TIMING,
    "train_loss",
    "train_answer_loss",
    "train_coupling_loss",
    "train_joint_nll",
    *(f"train_{k}_{m}" for k in ("grad_norm", "clip") for m in ("answer", "rationale")),
    *(f"{split}_{k}" for split in ("dev", "val") for k in EVALUATED),
}


def tiny(**changes) -> TrainConfig:
    return TrainConfig(
        **{
            "method": "gumbel",
            "preset": "tiny",
            "epochs": 3,
            "batch_size": 8,
            "lr": 3e-3,
            "anneal_epochs": 2,
            **changes,
        }
    )


def _without_timing(history):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


class Crash(Exception):
    pass


@pytest.mark.parametrize("method", ["gumbel", "teacher"])
def test_resume_after_an_epoch_equals_an_uninterrupted_run(synthetic_features, tmp_path, method):
    data = CachedVCRDataset(synthetic_features)
    config = tiny(method=method)
    straight = fit(config, data, data, tmp_path / "straight")

    def crash_after_first_epoch(metrics, out):
        if metrics["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        fit(config, data, data, tmp_path / "resumed", on_epoch=crash_after_first_epoch)
    assert load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["epoch"] == 1
    resumed = fit(config, data, data, tmp_path / "resumed", resume=True)
    assert _without_timing(resumed) == _without_timing(straight)
    a = load_checkpoint(tmp_path / "straight" / CHECKPOINT)["model"]
    b = load_checkpoint(tmp_path / "resumed" / CHECKPOINT)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]  # no gap, no repeat
    assert set(straight[0]) == METRIC_NAMES | ({"tau"} if method == "gumbel" else set())
    if method == "gumbel":  # 3 steps an epoch, annealed over 2 epochs: the last steps' tau
        assert [m["tau"] for m in straight] == pytest.approx([5 - 4 * 2 / 5, 1, 1])


def test_a_trials_training_on_cpu_repeats_bit_for_bit(synthetic_features, tmp_path):
    """The same TrainConfig and seed: the same metrics every epoch and the same weights, Gumbel
    noise and batch order drawn included. (Which trials a study draws depends on the order in
    which its concurrent trials finish: docs/results.md.)"""
    data = CachedVCRDataset(synthetic_features)
    val = data.subset(np.arange(6))  # a small val: evaluation is not what is tested
    config = tiny(epochs=2, seed=7)
    first = fit(config, data, val, tmp_path / "first")
    second = fit(config, data, val, tmp_path / "second")
    assert len(first) == 2 and _without_timing(first) == _without_timing(second)
    a = load_checkpoint(tmp_path / "first" / CHECKPOINT)["model"]
    b = load_checkpoint(tmp_path / "second" / CHECKPOINT)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_configuration(synthetic_features, tmp_path):
    data = CachedVCRDataset(synthetic_features)
    fit(tiny(epochs=1), data, data, tmp_path)
    with pytest.raises(InputError, match="another configuration"):
        fit(tiny(epochs=1, lr=1e-2), data, data, tmp_path, resume=True)


def test_resume_accepts_a_checkpoint_from_before_a_key_existed(synthetic_features, tmp_path):
    """A key added later (``bucket_batches``) takes its default in an older checkpoint."""
    data = CachedVCRDataset(synthetic_features)

    def crash_after_first_epoch(metrics, out):
        raise Crash

    with pytest.raises(Crash):
        fit(tiny(epochs=2), data, data, tmp_path, on_epoch=crash_after_first_epoch)
    saved = load_checkpoint(tmp_path / CHECKPOINT)
    del saved["config"]["bucket_batches"]
    torch.save(saved, tmp_path / CHECKPOINT)
    assert len(fit(tiny(epochs=2), data, data, tmp_path, resume=True)) == 2


class NaNFeatures(CachedVCRDataset):
    @property
    def arrays(self):
        a = dict(super().arrays)
        a["objects"] = np.full_like(a["objects"], np.nan)
        return a


def test_a_nan_loss_stops_training_with_a_clear_error(synthetic_features, tmp_path):
    data = CachedVCRDataset(synthetic_features)
    with pytest.raises(TrainingDiverged, match="epoch 1: the training loss is nan"):
        fit(tiny(), NaNFeatures(synthetic_features), data, tmp_path)


@pytest.mark.parametrize(
    "values,message",
    [
        ({"method": "bogus"}, "method: must be one of"),
        ({"loss_ratio": "0"}, "loss_ratio: must be positive"),
        ({"learning_rate": "1"}, "unknown key 'learning_rate'"),
        ({"epochs": "two"}, "epochs: 'two' is not an int"),
        ({"straight_through": "maybe"}, "straight_through: 'maybe' is not a bool"),
        (
            {"estimator": "score", "num_samples": "1"},
            "num_samples: must be at least 2 with estimator",
        ),
        ({"estimator": "sampled"}, "estimator: must be one of expectation, exact, score"),
        ({"anneal_per": "batch"}, "anneal_per: must be iteration or epoch"),
        ({"direct16_variant": "both"}, "direct16_variant: must be separate or joint"),
    ],
)
def test_config_errors_name_the_key(values, message):
    with pytest.raises(InputError, match=message):
        TrainConfig.from_dict(values, where="--set")


def test_the_flat_keys_hold_the_coupling_knobs_once():
    config = TrainConfig.from_dict(
        {
            "estimator": "exact",
            "anneal_per": "epoch",
            "direct16_variant": "joint",
            "r2c_init": "true",
        }
    )
    coupling = config.coupling()
    assert (coupling.estimator, coupling.anneal_per, coupling.direct16_variant) == (
        "exact",
        "epoch",
        "joint",
    )
    assert config.backbone().r2c_init is True
    assert TrainConfig.from_dict(config.to_dict()) == config


class OneObject(CachedVCRDataset):
    """Items with only their first object (the whole image), every word tagged with it."""

    @property
    def arrays(self):
        a = dict(super().arrays)
        first = a["rows"][a["offsets"][:-1]]
        a.update(rows=first, offsets=np.arange(len(first) + 1), tags=np.zeros_like(a["tags"]))
        return a


@pytest.mark.parametrize("batch_size", [1, 2])  # every batch, the last batch (3 items)
def test_a_batch_of_a_single_object_trains(synthetic_features, tmp_path, batch_size):
    """BatchNorm cannot standardise one row in training: its running statistics stand in."""
    whole = CachedVCRDataset(synthetic_features)
    images, movies = whole.images(), whole.movies()
    first = [np.flatnonzero(movies == m)[0] for m in np.unique(movies)[:2]]  # 2 movies' first
    two_images = np.flatnonzero(np.isin(images, images[first]))  # images, of 3 questions each:
    data = OneObject(synthetic_features, two_images)  # 1 goes to dev
    assert len(dev_split(data, 0.1, 0)[0]) == 3
    history = fit(tiny(epochs=1, batch_size=batch_size), data, data, tmp_path)
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["train_loss"]))


def test_a_checkpoint_with_the_object_class_head_is_a_clear_error(synthetic_features, tmp_path):
    data = CachedVCRDataset(synthetic_features)
    fit(tiny(epochs=1), data, data, tmp_path)
    saved = load_checkpoint(tmp_path / CHECKPOINT)
    saved["model"]["answer_module.object_classifier.weight"] = torch.zeros(81, 2048)
    torch.save(saved, tmp_path / "old.pt")
    with pytest.raises(
        InputError,
        match="old.pt: made by another version of the model "
        r"\(unknown parts answer_module.object_classifier\)",
    ):
        load_model(tmp_path / "old.pt")
    with pytest.raises(InputError, match="object_classifier"):
        torch.save(saved, tmp_path / CHECKPOINT)
        fit(tiny(epochs=1), data, data, tmp_path, resume=True)


def test_csv_round_trip_scores_like_the_metrics(tmp_path):
    torch.manual_seed(0)
    answers = torch.softmax(torch.randn(50, 4), -1)
    rationales = torch.softmax(torch.randn(50, 4, 4), -1)
    a_labels, r_labels = torch.randint(0, 4, (50,)), torch.randint(0, 4, (50,))
    ids = [f"val-{i}" for i in range(50)]
    path = write_csv(tmp_path / "sub.csv", ids, answers, rationales)
    with path.open() as f:
        header = next(csv.reader(f))
    assert header == COLUMNS and len(header) == 21
    assert header[5] == "rationale_conditioned_on_a0_0" and header[-1].endswith("a3_3")
    got_ids, got_a, got_r = read_csv(path)
    assert got_ids == ids
    assert score(got_a, got_r, a_labels, r_labels) == pytest.approx(
        score(answers, rationales, a_labels, r_labels)
    )


def test_train_predict_evaluate_commands(synthetic_dir, tmp_path, cli):
    out = tmp_path / "run"
    code, stdout, err = cli(
        "train",
        "--method",
        "softmax",
        "--set",
        "preset=tiny",
        "--epochs",
        2,
        "--data",
        synthetic_dir,
        "--cache",
        tmp_path / "cache",
        "--out",
        out,
    )
    assert code == 0, err
    assert "epoch  2" in stdout and "best epoch" in stdout
    # --device auto (the default) says where it trains: this machine has no GPU
    assert "device: cpu (" in stdout and "no CUDA GPU seen" in stdout
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    code, stdout, err = cli(
        "predict",
        "--checkpoint",
        out / "checkpoint.pt",
        "--data",
        synthetic_dir,
        "--cache",
        tmp_path / "cache",
        "--out",
        tmp_path / "test.csv",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert "device: cpu (" in stdout and "no CUDA GPU seen" not in stdout  # as asked
    ids, answers, rationales = read_csv(tmp_path / "test.csv")
    assert len(ids) == 9 and ids[0] == "test-0"
    torch.testing.assert_close(
        rationales.sum(-1), torch.ones(9, 4, dtype=torch.float64), atol=1e-4, rtol=0
    )
    # the val CSV scores exactly as the training loop's last validation
    cli(
        "predict",
        "--checkpoint",
        out / "checkpoint.pt",
        "--data",
        synthetic_dir,
        "--cache",
        tmp_path / "cache",
        "--split",
        "val",
        "--out",
        tmp_path / "val.csv",
    )
    code, stdout, err = cli(
        "evaluate", "--predictions", tmp_path / "val.csv", "--data", synthetic_dir, "--split", "val"
    )
    assert code == 0, err
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"Q->A {last['val_q2a']:.4f}" in stdout and f"Q->AR {last['val_q2ar']:.4f}" in stdout


def test_bad_checkpoint_and_bad_csv_are_one_line_errors(synthetic_dir, tmp_path, cli):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x80\x02 truncated")
    code, _, err = cli(
        "predict", "--checkpoint", broken, "--data", synthetic_dir, "--out", tmp_path / "x.csv"
    )
    assert code == 2 and "broken.pt: not a readable checkpoint" in err
    assert not (tmp_path / "x.csv").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("annot_id,answer_0\nval-0,0.5\n")
    code, _, err = cli("evaluate", "--predictions", bad, "--data", synthetic_dir)
    assert code == 2 and "bad.csv:1: expected the 21 leaderboard columns" in err
    code, _, err = cli("train", "--set", "bogus=1", "--out", tmp_path / "r")
    assert code == 2 and "--set: unknown key 'bogus'" in err


def test_the_dev_split_holds_whole_movies_and_is_the_same_for_every_run_seed(synthetic_features):
    data = CachedVCRDataset(synthetic_features)
    movies = data.movies()
    assert len(set(movies)) == 3  # 24 questions: 8 images, 3 to a movie (vcrnet.data.synth)
    rest, dev = dev_split(data, 0.25, seed=0)
    assert len(rest) + len(dev) == len(data) and not set(rest.annot_ids) & set(dev.annot_ids)
    assert 0.25 * len(data) <= len(dev) <= 0.25 * len(data) + 9  # whole movies of <= 9
    assert not set(rest.movies()) & set(dev.movies())  # no movie on both sides
    assert not set(rest.images()) & set(dev.images())  # so no image either
    assert dev_split(data, 0.25, seed=0)[1].annot_ids == dev.annot_ids  # seeded
    assert dev_split(data, 0.25, seed=1)[1].annot_ids != dev.annot_ids
    item = dev[0]  # a view serves the split's own item, with its labels
    assert dev.annot_ids[0] == data.annot_ids[dev.items[0]]
    assert (item["labels"] == data.labels[dev.items[0]]).all()
    with pytest.raises(InputError, match="dev_fraction"):
        TrainConfig(dev_fraction=0.0)


def test_every_choice_is_made_on_dev_and_val_is_only_reported(synthetic_features, tmp_path):
    data = CachedVCRDataset(synthetic_features)
    history = fit(tiny(method="softmax", epochs=4, patience=4), data, data, tmp_path)
    best_on_dev = max(history, key=lambda m: m[OBJECTIVE])  # the first best, as fit keeps it
    best = load_checkpoint(tmp_path / BEST)
    assert best["epoch"] == best_on_dev["epoch"]
    assert set(best) == set(BEST_KEYS)  # the weights, without the optimizer's state
    recorded = json.loads((tmp_path / DEV_ITEMS).read_text())  # recorded with the run
    dev = dev_split(data, 0.1, 0)[1]
    assert recorded["annot_ids"] == dev.annot_ids and recorded["carved_by"] == "movie"
    assert recorded["movies"] == sorted(set(dev.movies())) and len(recorded["movies"]) >= 1


@pytest.mark.parametrize(
    "objective,best_epoch,rates",
    [(OBJECTIVE, 4, [1.0, 1.0, 1.0, 1.0]), ("dev_qa2r", 2, [1.0, 1.0, 1.0, 0.5])],
)
def test_a_run_selects_on_its_own_objective(
    synthetic_features, tmp_path, monkeypatch, objective, best_epoch, rates
):
    """LR steps, stopping and the best epoch follow ``objective``: dev Q->AR rises every epoch
    here while dev QA->R peaks at epoch 2 (the dev scores scripted; training is real)."""
    scripted = {"dev_q2ar": [0.1, 0.2, 0.3, 0.4], "dev_qa2r": [0.5, 0.9, 0.6, 0.7]}
    calls = []

    def scores(model, dataset, batch_size, coupling):
        epoch = len(calls) // 2  # dev, then val, each epoch
        calls.append(epoch)
        values = dict.fromkeys(EVALUATED, 0.0)
        values.update({k.removeprefix("dev_"): v[epoch] for k, v in scripted.items()})
        return values

    monkeypatch.setattr("vcrnet.train.evaluate", scores)
    data = CachedVCRDataset(synthetic_features)
    config = tiny(objective=objective, epochs=4, patience=3, lr_patience=0, lr_cooldown=0)
    history = fit(config, data, data, tmp_path)
    assert [m["lr"] / config.lr for m in history] == pytest.approx(rates)
    assert load_checkpoint(tmp_path / BEST)["epoch"] == best_epoch
    assert [m[objective] for m in history] == scripted[objective]


def test_the_baselines_answer_modules_train_alike_whatever_the_rationale_module_does(
    synthetic_features,
):
    """R2C (correct-answer rate 1.0) and the new baseline (0.75) in lockstep: same seed, same
    batches, a clip small enough to act at every step. Their answer modules get no gradient from
    the rationale loss, so, each module clipped on its own, they stay equal bit for bit; one clip
    over both modules (as before) would scale each answer step by the other module's norm.
    Dropout off: its draws are not what is compared."""
    from vcrnet.train import build, make_optimizer, train_epoch

    dataset = CachedVCRDataset(synthetic_features)
    runs = []
    for rate in (1.0, 0.75):
        config = tiny(
            method="teacher", correct_answer_rate=rate, grad_clip=0.01, bucket_batches=0,
            object_dropout=0.0, rnn_dropout=0.0, mlp_dropout=0.0,
        )  # fmt: skip
        model, coupling = build(config, dataset.text_dim)
        optimizer = make_optimizer(model, config)
        metrics = [train_epoch(model, coupling, dataset, optimizer, config, e) for e in (0, 1)]
        runs.append((model, metrics))
    (one, first), (other, second) = runs
    for (name, a), (_, b) in zip(
        one.answer_module.state_dict().items(), other.answer_module.state_dict().items()
    ):
        assert torch.equal(a, b), name
    rationale = zip(one.rationale_module.parameters(), other.rationale_module.parameters())
    assert not all(torch.equal(a, b) for a, b in rationale)  # the rationale modules differ
    for epoch in first + second:  # each module's norm and clip, logged per epoch
        assert epoch["train_grad_norm_answer"] > 0.01 and epoch["train_clip_answer"] < 1
        assert epoch["train_grad_norm_rationale"] > 0 and 0 < epoch["train_clip_rationale"] <= 1
    assert [m["train_grad_norm_answer"] for m in first] == [
        m["train_grad_norm_answer"] for m in second
    ]
