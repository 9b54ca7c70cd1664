"""``ablations.build_report`` on a real small study, without Ray.

The studies are made as ``launch`` leaves them: the experiment and parent run by
``tracking.create_study``, trial runs tagged, parametrised and logged epoch by epoch as
``tracking.MLflowTracker`` logs them (in a real sqlite MLflow store), and an Optuna journal of the
same draws. The default space's shape: 4 epochs, ASHA stopping most trials after the first.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from study import store, tracking
from study.reports import ablations, figures, importance
from study.search import load_space

EPOCHS = 4
SPACE = load_space("default")
# (method, its drawn settings, val Q->AR per epoch run; fewer than EPOCHS: stopped early).
# Loss ratios in 1.9..2.1: a narrow log range, where matplotlib's own labels overlapped.
EIGHT = [
    ("softmax", {"loss_ratio": 1.9, "lr": 1e-3}, [0.30, 0.38, 0.42, 0.47]),
    ("softmax", {"loss_ratio": 2.05, "lr": 2e-3}, [0.20]),
    ("gumbel", {"loss_ratio": 2.1, "lr": 1e-3, "tau_start": 3.0, "anneal_epochs": 2}, [0.13]),
    (
        "gumbel",
        {"loss_ratio": 2.0, "lr": 8e-4, "tau_start": 6.0, "anneal_epochs": 4},
        [0.12, 0.30, 0.40, 0.47],
    ),
    ("reinforce", {"loss_ratio": 1.95, "lr": 6e-4, "num_samples": 8}, [0.10]),
    (
        "teacher",
        {"loss_ratio": 2.0, "lr": 1e-3, "correct_answer_rate": 0.75},
        [0.25, 0.33, 0.36, 0.40],
    ),
    ("teacher", {"loss_ratio": 1.92, "lr": 2.5e-3, "correct_answer_rate": 1.0}, [0.18]),
    ("softmax", {"loss_ratio": 2.08, "lr": 5e-4, "anneal_epochs": 3}, [0.15]),  # not drawn
]


def sixty_four() -> list:
    """64 trials over every method and the whole default space; 3 in 4 stopped after epoch 1."""
    rng = random.Random(0)
    trials = []
    for i in range(64):
        method = SPACE.params["method"].args[i % 5]
        values = {
            "loss_ratio": rng.uniform(0.5, 4.0),
            "lr": rng.uniform(5e-4, 3e-3),
            "tau_start": rng.uniform(2, 8),
            "anneal_epochs": rng.randint(1, 4),
            "num_samples": rng.randint(4, 32),
            "correct_answer_rate": rng.choice([0.75, 1.0]),
        }
        start = rng.uniform(0.05, 0.3)
        curve = [start + 0.05 * e for e in range(EPOCHS if i % 4 == 0 else 1)]
        trials.append((method, values, curve))
    return trials


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> MlflowClient:
    """One home and sqlite store for the module (made once: ~5 s); each study its own name."""
    home = tmp_path_factory.mktemp("ablations") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VCR_STUDY_HOME", str(home))
        yield MlflowClient(store.tracking_uri(store.LaunchOptions()))


def make_study(client: MlflowClient, name: str, trials: list, journal: Path) -> str:
    """A finished default-space study of ``trials``; returns its parent run id."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    home = Path(store.home())
    parent = tracking.create_study(client, name, home, store.artifacts_dir(name))
    experiment_id = client.get_run(parent).info.experiment_id
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searched = optuna.create_study(
        study_name=name,
        direction="maximize",
        storage=JournalStorage(JournalFileBackend(str(journal))),
    )
    for i, (method, drawn, curve) in enumerate(trials):
        values = {"method": method, "epochs": EPOCHS, **drawn}
        params = SPACE.config({**SPACE.fixed, **values}).to_dict()  # as flat_params logs them
        status = "COMPLETED" if len(curve) == EPOCHS else "STOPPED_EARLY"
        tags = {
            tracking.PARENT_TAG: parent,
            "trial_id": f"{name}_{i:05d}",
            "method": method,
            "final_status": status,
        }
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        metrics = []
        for epoch, value in enumerate(curve, start=1):
            metrics += [
                Metric(k, v, 0, epoch)
                for k, v in (
                    ("val_q2ar", value),
                    ("dev_q2ar", value + 0.01),
                    ("best_dev_q2ar", max(curve[:epoch]) + 0.01),
                    ("epoch", epoch),
                )
            ]
        client.log_batch(run_id, metrics=metrics)
        client.set_terminated(run_id, "FINISHED")
        used = {
            k: v
            for k, v in values.items()
            if k in SPACE.params and SPACE.params[k].applies_to(method)
        }
        searched.add_trial(
            optuna.trial.create_trial(
                params=used, distributions={k: _distribution(k) for k in used}, value=curve[-1]
            )
        )
    client.set_terminated(parent, "FINISHED")
    return parent


def _distribution(name: str):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    p = SPACE.params[name]
    if p.kind == "choice":
        return CategoricalDistribution(list(p.args))
    if p.kind == "int":
        return IntDistribution(*p.args, log=p.log)
    return FloatDistribution(*p.args, log=p.log)


class Drawn:
    """Every figure build_report saves, drawn before it is written: its overlapping labels and
    its legends' texts, by file name."""

    def __init__(self, patch: pytest.MonkeyPatch):
        self.overlaps: dict[str, list] = {}
        self.legends: dict[str, list[str]] = {}
        self.save = figures.save_figure
        patch.setattr(ablations, "save_figure", self.keep)  # the setting and curve plots
        patch.setattr(importance, "save_figure", self.keep)  # importances, parallel coordinates

    def keep(self, fig, stem: Path) -> list[Path]:
        fig.canvas.draw()
        self.overlaps[stem.name] = overlapping_labels(fig)
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
        self.legends[stem.name] = [t.get_text() for lg in legends if lg for t in lg.get_texts()]
        return self.save(fig, stem)


def overlapping_labels(fig) -> list[tuple[str, str]]:
    """Pairs of tick labels (or axis texts) of one axes whose drawn boxes overlap."""
    renderer = fig.canvas.get_renderer()
    pairs = []
    for ax in fig.axes:
        for texts in (ax.get_xticklabels(), ax.get_yticklabels(), ax.texts):
            boxes = [
                (t.get_text(), t.get_window_extent(renderer))
                for t in texts
                if t.get_visible() and t.get_text()
            ]
            for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
                width = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
                height = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
                if width > 0.5 and height > 0.5:
                    pairs.append((a, b))
    return pairs


PLOTS = (
    "loss_ratio",
    "gumbel_schedule",
    "rl_samples",
    "baseline_rate",
    "learning_curves",
    "importances",
    "parallel_coordinates",
)


@pytest.fixture(scope="module")
def eight(client, tmp_path_factory):
    """The default study's size, reported once with the space (as the CLI would): the parent
    run, the journal, the report's folder, its files and its figures."""
    journal = tmp_path_factory.mktemp("journal") / "eight.journal"
    parent = make_study(client, "eight", EIGHT, journal)
    out = tmp_path_factory.mktemp("eight")
    with pytest.MonkeyPatch.context() as patch:
        drawn = Drawn(patch)
        files = report(client, parent, journal, "eight", out)
    return parent, journal, out, files, drawn


def report(client, parent, journal, name, out, space=SPACE) -> dict[str, Path]:
    written = ablations.build_report(
        client, parent, out, journal, name, approaches=SPACE.methods(), space=space
    )
    return {p.name: p for p in written}


def test_every_plot_is_written_readable_and_logged(client, eight):
    parent, _, _, files, drawn = eight
    for plot in PLOTS:
        assert files[f"{plot}.png"].stat().st_size > 0, plot
    assert set(drawn.overlaps) == set(PLOTS)
    assert {name: pairs for name, pairs in drawn.overlaps.items() if pairs} == {}
    logged = {a.path for a in client.list_artifacts(parent, "ablations")}
    assert {f"ablations/{p}.png" for p in PLOTS} <= logged


def test_settings_are_compared_at_equal_epochs_with_stopped_trials_marked(eight):
    out = eight[2]
    table = pd.read_csv(out / "gumbel_schedule.csv").set_index("tau_start")
    assert list(table.columns[-2:]) == ["val_q2ar at epoch 1", "val_q2ar at epoch 4"]
    # the stopped trial's 1-epoch 0.13 stands beside the other's epoch 1 (0.12), not its 0.47
    assert table.loc[3.0, "val_q2ar at epoch 1"] == 0.13
    assert table.loc[6.0, "val_q2ar at epoch 1"] == 0.12
    assert pd.isna(table.loc[3.0, "val_q2ar at epoch 4"])
    assert table.loc[6.0, "val_q2ar at epoch 4"] == 0.47
    assert table.loc[3.0, "stopped early"] == "yes" and pd.isna(table.loc[6.0, "stopped early"])
    assert "equal epochs (epoch 1, epoch 4)" in (out / "gumbel_schedule.md").read_text()
    ratios = pd.read_csv(out / "loss_ratio.csv")
    assert set(ratios["method"]) == {"softmax", "gumbel"} and len(ratios) == 5


def test_the_figures_mark_stopped_trials_in_their_legends(eight):
    legends = eight[4].legends
    for plot in ("loss_ratio", "gumbel_schedule", "learning_curves", "parallel_coordinates"):
        assert "stopped early" in legends[plot], plot
    assert "gumbel" in legends["loss_ratio"] and "softmax" in legends["loss_ratio"]


def trials_md_rows(text: str) -> list[dict[str, str]]:
    header, _, *lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    columns = [c.strip() for c in header.strip("|").split("|")]
    return [dict(zip(columns, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines]


@pytest.mark.parametrize("source", ["space", "journal"])
def test_trials_md_shows_a_setting_only_under_the_methods_that_use_it(
    client, eight, tmp_path, source
):
    parent, journal, out, _, _ = eight
    if source == "journal":  # no space given: the Optuna trials say what each method drew
        report(client, parent, journal, "eight", tmp_path, space=None)
        out = tmp_path
    text = (out / "trials.md").read_text()
    assert "Every trial: " in text and "epochs 4" in text and "batch_size 16" in text
    rows = trials_md_rows(text)
    assert len(rows) == len(EIGHT)
    for row in rows:
        assert row["num_samples"] == ("8" if row["method"] == "reinforce" else "-")
        assert (row["tau_start"] == "-") == (row["method"] != "gumbel")
        assert (row["correct_answer_rate"] == "-") == (row["method"] != "teacher")
        assert row["loss_ratio"] != "-" and row["lr"] != "-"  # every method's
    anneal = {r["method"]: r["anneal_epochs"] for r in rows if r["method"] != "gumbel"}
    assert set(anneal.values()) == {"-"}  # a softmax trial's anneal_epochs 3 is not its own
    csv = pd.read_csv(out / "trials.csv")
    assert csv.loc[csv["method"] == "teacher", "num_samples"].isna().all()  # not 64


def test_importances_say_when_the_trials_are_too_few(eight):
    out = eight[2]
    table = pd.read_csv(out / "importances.csv")
    assert dict(table.groupby("epoch")["trials"].first()) == {1: 8, 4: 3}
    assert table["note"].str.contains("too few").all()
    assert "epoch 1: 8 trials - too few trials (under 10)" in (out / "importances.md").read_text()
    assert {"method", "loss_ratio", "lr"} <= set(table["param"])


def test_every_approach_of_the_space_has_a_row(eight):
    best = pd.read_csv(eight[2] / "best_per_method.csv").set_index("approach")
    assert list(best.index[-2:]) == ["reinforce", "direct16"]  # by Q->AR, then the missing
    assert set(best.index) == set(SPACE.methods())
    assert best.loc["direct16", "trial_id"] == "no trial"  # the sampler never drew it
    assert best.loc["softmax", "epochs run"] == EPOCHS


def test_a_64_trial_study_stays_readable(client, tmp_path, monkeypatch):
    parent = make_study(client, "sixty-four", sixty_four(), tmp_path / "64.journal")
    drawn = Drawn(monkeypatch)
    files = report(client, parent, tmp_path / "64.journal", "sixty-four", tmp_path / "out")
    assert {f"{p}.png" for p in PLOTS} <= set(files)
    assert {name: pairs for name, pairs in drawn.overlaps.items() if pairs} == {}
    table = pd.read_csv(tmp_path / "out" / "importances.csv", keep_default_na=False)
    assert dict(table.groupby("epoch")["trials"].first()) == {1: 64, 4: 16}
    assert set(table["note"]) == {""}  # enough trials at both epochs: no note


PAPER = load_space("paper")
# label -> dev Q->AR, dev Q->AR under the answer mixture, val Q->AR under it, per epoch: the
# softmax and Gumbel rows select on the mixture (paper.yaml), whose best epoch is another
PAPER_CURVES = {
    "R2C": {"dev_q2ar": [0.30, 0.50, 0.40], "val_q2ar": [0.31, 0.52, 0.41]},
    "softmax": {
        "dev_q2ar": [0.20, 0.30, 0.60],
        "dev_q2ar_mixture": [0.20, 0.45, 0.35],
        "val_q2ar_mixture": [0.21, 0.44, 0.70],
        "val_q2ar": [0.19, 0.29, 0.61],
    },
    "Gumbel softmax": {
        "dev_q2ar": [0.10, 0.20, 0.15],
        "dev_q2ar_mixture": [0.10, 0.15, 0.55],
        "val_q2ar_mixture": [0.12, 0.18, 0.40],
        "val_q2ar": [0.11, 0.19, 0.14],
    },
}


def test_the_paper_tables_read_each_row_on_its_own_objective(client, tmp_path):
    """Each labelled row at its best epoch by the objective its row selected on, which the
    tables name; sorted by that dev value, not by val."""
    name = "paper-objectives"
    parent = tracking.create_study(client, name, Path(store.home()), store.artifacts_dir(name))
    experiment_id = client.get_run(parent).info.experiment_id
    rows = {row["label"]: row for row in PAPER.trials}
    for i, (label, curves) in enumerate(PAPER_CURVES.items()):
        row = {k: v for k, v in rows[label].items() if k != "label"}
        params = PAPER.config({**PAPER.fixed, **row}).to_dict()
        tags = {
            tracking.PARENT_TAG: parent,
            tracking.LABEL: label,
            "trial_id": f"{name}_{i:05d}",
            "method": params["method"],
            "final_status": "COMPLETED",
        }
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        client.log_batch(
            run_id,
            metrics=[
                Metric(key, value, 0, epoch)
                for key, values in curves.items()
                for epoch, value in enumerate(values, start=1)
            ],
        )
        client.set_terminated(run_id, "FINISHED")
    out = tmp_path / "out"
    ablations.build_report(client, parent, out, None, name, approaches=PAPER.approaches())
    best = pd.read_csv(out / "best_per_method.csv").set_index("approach")
    assert best.loc["softmax", "selected on"] == "dev_q2ar_mixture"
    assert best.loc["softmax", "best_epoch"] == 2  # the mixture's best, not dev Q->AR's (3)
    assert best.loc["softmax", "dev (selected on)"] == pytest.approx(0.45)
    assert best.loc["R2C", "selected on"] == "dev_q2ar" and best.loc["R2C", "best_epoch"] == 2
    scored = best[best["dev (selected on)"].notna()]
    assert list(scored.index) == ["Gumbel softmax", "R2C", "softmax"]  # by dev: 0.55, 0.5, 0.45
    table1 = pd.read_csv(out / "paper_table1.csv")
    assert list(table1["approach"][:2]) == ["Gumbel softmax", "softmax"]  # by dev, then no trial
    softmax = table1.set_index("approach").loc["softmax"]
    assert softmax["selected on"] == "dev_q2ar_mixture"
    assert softmax["Q->AR study"] == pytest.approx(44.0)  # val at the mixture's best epoch
    assert softmax["dev study (selected on)"] == pytest.approx(45.0)
