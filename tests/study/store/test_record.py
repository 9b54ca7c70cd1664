"""The study store: a study's record (``study.json``) round-trips, is written whole or not at all,
and a missing or outdated one is refused in one line."""

from __future__ import annotations

import dataclasses
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


def test_a_study_from_before_the_rooms_is_read_but_not_resumed(home, cli):
    """A record written the way vcr-study wrote it before study/ became rooms (no ``layout``):
    Tune's saved state of such a study names modules that moved (``study.disk``,
    ``study.launch.FlatParams``, ...), so ``--resume`` is refused in one line before anything is
    written; the record still loads for the commands that only read it."""
    options = dataclasses.asdict(LaunchOptions(name="old", features={"text_encoder": "minilm"}))
    folder = home / "studies" / "old"
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({**options, "parent_run_id": "x"}))
    before = sorted(p.relative_to(home) for p in home.rglob("*"))
    assert store.load("old").parent_run_id == "x"  # best, ablations, studies read it
    code, out, err = cli("launch", "--name", "old", "--resume")
    assert code == 2 and err.count("\n") == 1, err
    assert "--name old: made by an earlier vcr-study" in err and "cannot be resumed" in err
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == before  # nothing written
    record = json.loads((folder / "study.json").read_text())
    (folder / "study.json").write_text(json.dumps({**record, "layout": 2}))  # before movies
    code, out, err = cli("launch", "--name", "old", "--resume")
    assert code == 2 and err.count("\n") == 1 and "a dev split carved by image" in err, err
    store.save(StudyRecord(store.load("old").options, "x"))  # what this vcr-study writes
    assert json.loads((folder / "study.json").read_text())["layout"] == store.LAYOUT == 3
    store.check_resumable("old")
