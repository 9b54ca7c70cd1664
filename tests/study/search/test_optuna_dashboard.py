"""optuna-dashboard reads a study's journal: started on it as the README says, its HTTP API lists
every trial of the study with its parameters, per-epoch values and state."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from study import search, store
from study.search import load_space
from tests.helpers import free_port, wait_until_answers

DASHBOARD = shutil.which("optuna-dashboard") or str(
    Path(os.sys.executable).parent / "optuna-dashboard"
)


def _drive(name: str) -> dict[str, dict]:
    """Three trials of the default space through the searcher ``launch`` builds, as Tune drives
    it: one runs its 4 epochs, one is stopped by the scheduler after epoch 1 (its result goes
    to on_trial_complete only), one fails; returns each trial's config by Tune id."""
    store.study_dir(name).mkdir(parents=True, exist_ok=True)
    searcher = search.optuna_searcher(
        load_space("default"),
        searcher="tpe",
        seed=0,
        trials=8,
        journal=store.journal_path(name),
        study_name=name,
        metric="dev_q2ar",
        mode="max",
        max_epochs=load_space("default").max_epochs({}),
    )
    configs = {tid: searcher.suggest(tid) for tid in ("t0", "t1", "t2")}
    for epoch in range(1, 4):
        searcher.on_trial_result("t0", {"dev_q2ar": 0.1 * epoch, "epoch": epoch})
    searcher.on_trial_complete("t0", {"dev_q2ar": 0.4, "epoch": 4})
    searcher.on_trial_complete("t1", {"dev_q2ar": 0.05, "epoch": 1})
    searcher.on_trial_complete("t2", None, error=True)
    return configs


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


@pytest.mark.slow
def test_the_dashboard_shows_every_trial_of_a_studys_journal(tmp_path, monkeypatch):
    monkeypatch.setenv("VCR_STUDY_HOME", str(tmp_path / "home"))
    configs = _drive("dash")
    port = free_port()
    server = subprocess.Popen(
        [
            DASHBOARD,
            str(store.journal_path("dash")),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/api/studies", server, "optuna-dashboard")
        studies = {s["study_name"]: s for s in _get(f"{url}/api/studies")["study_summaries"]}
        assert "dash" in studies
        trials = _get(f"{url}/api/studies/{studies['dash']['study_id']}")["trials"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert [t["state"] for t in trials[:3]] == ["Complete", "Pruned", "Fail"]
    for trial, config in zip(trials, configs.values()):
        params = {p["name"]: p["param_external_value"] for p in trial["params"]}
        assert "method" in params and "lr" in params  # the searched ones (not the space's fixed)
        assert params == {k: str(config[k]) for k in params}
    assert trials[0]["values"] == [pytest.approx(0.4)]
    assert [v["step"] for v in trials[0]["intermediate_values"]] == [1, 2, 3, 4]
    assert [v["step"] for v in trials[1]["intermediate_values"]] == [1]
