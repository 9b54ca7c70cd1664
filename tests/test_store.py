"""The study store: a study's record (``study.json``) round-trips, is written whole or not at all,
and a missing or outdated one is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from study import store
from study.store import LaunchOptions, StudyRecord
from vcrnet.errors import InputError

FEATURES = {"text_encoder": "minilm", "text_layer": -1, "image_size": [256, 128]}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VCR_STUDY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _record(name: str, parent: str = "parent-1", **changes) -> StudyRecord:
    values = dict(
        name=name,
        space="/spaces/smoke.yaml",
        trials=5,
        asha=False,
        overrides={"epochs": 2, "lr": 0.003},
        data="/data/vcr",
        features=FEATURES,
        tracking_uri="http://127.0.0.1:5000",
    )
    return StudyRecord(LaunchOptions(**{**values, **changes}), parent)


def test_the_record_round_trips_options_and_parent_run(home):
    record = _record("r1", parent="0123abcd", cpus_per_trial=0.5, searcher="random")
    store.save(record)
    assert store.load("r1") == record
    options, parent = store.load("r1")
    assert parent == "0123abcd" and options.overrides == {"epochs": 2, "lr": 0.003}
    saved = json.loads((home / "studies" / "r1" / "study.json").read_text())
    assert saved["parent_run_id"] == "0123abcd" and saved["features"] == FEATURES
    assert store.record_path("r1") == home / "studies" / "r1" / "study.json"
    assert store.tracking_uri(options) == "http://127.0.0.1:5000"
    assert store.tracking_uri(LaunchOptions()) == f"sqlite:///{home / 'mlflow.db'}"


def test_a_failed_write_leaves_the_old_record_whole(home, monkeypatch):
    store.save(_record("r2", parent="old"))
    write_text = Path.write_text

    def half_then_fail(path, text, *args, **kwargs):  # the disk fills half-way through
        write_text(path, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="No space left"):
        patch.setattr(Path, "write_text", half_then_fail)
        store.save(_record("r2", parent="new", trials=9))
    assert store.load("r2") == _record("r2", parent="old")
    assert [p.name for p in (home / "studies" / "r2").iterdir()] == ["study.json"]


def test_a_missing_study_names_the_known_ones(home):
    with pytest.raises(InputError) as error:
        store.load("nosuch")
    assert str(error.value) == f"--name nosuch: no such study under {home}"
    store.save(_record("beta"))
    store.save(_record("alpha"))
    with pytest.raises(InputError) as error:
        store.load("nosuch")
    assert str(error.value) == (
        f"--name nosuch: no such study under {home} (there are: alpha, beta)"
    )


def test_a_record_without_features_is_refused_in_one_line(home):
    folder = home / "studies" / "old"
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(
        '{"name": "old", "text_encoder": "minilm", "parent_run_id": "x"}'
    )
    with pytest.raises(InputError) as error:
        store.load("old")
    assert str(error.value) == (
        "--name old: made by an earlier vcr-study (it selected on val "
        "and did not record its features): launch a new study"
    )
