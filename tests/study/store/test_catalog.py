"""Listing and deleting the studies of a home, on real files and a real MLflow sqlite store.

The studies are made as ``launch`` leaves them, without Ray: the experiment and parent run by
``tracking.create_study``, trial runs tagged as ``tracking.MLflowTracker`` tags them (with a
real artifact each, under the home's ``mlartifacts/``), the record by ``store.save``, and files
in the study's folders.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from study import store, tracking
from study.store import Best, StudyRow, catalog
from tests.helpers import free_port
from vcrnet.errors import InputError

FEATURES = {"text_encoder": "minilm", "text_layer": -1, "image_size": [256, 128]}
FILES = {"journal": 2000, "checkpoint": 3000, "report": 500}
ARTIFACT = 1000  # bytes of each trial run's config.json


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One home for the module (its sqlite store is made once: ~5 s); tests use their own names."""
    path = tmp_path_factory.mktemp("manage") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VCR_STUDY_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def client(home) -> MlflowClient:
    return MlflowClient(store.tracking_uri(store.LaunchOptions()))


def make_study(
    client: MlflowClient,
    name: str,
    trials=(),
    status: str | None = "FINISHED",
    tracking_uri: str | None = None,
) -> int:
    """A study as a launch leaves it; ``trials``: (method, label or None, best dev_q2ar or None).
    Returns the bytes of its files."""
    home = Path(os.environ["VCR_STUDY_HOME"])
    parent = tracking.create_study(client, name, home, store.artifacts_dir(name))
    experiment_id = client.get_run(parent).info.experiment_id
    store.save(
        store.StudyRecord(
            store.LaunchOptions(name=name, features=FEATURES, tracking_uri=tracking_uri), parent
        )
    )
    for i, (method, label, best) in enumerate(trials):
        tags = {
            tracking.PARENT_TAG: parent,
            "trial_id": f"{name}_{i:05d}",
            "method": method,
            **({"label": label} if label else {}),
        }
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        if best is not None:
            client.log_metric(run_id, "best_dev_q2ar", best, step=1)
        client.log_text(run_id, "x" * ARTIFACT, "config.json")
        client.set_terminated(run_id, "FINISHED")
    rerun = client.create_run(experiment_id, tags={tracking.PARENT_TAG: parent})  # not a trial
    client.set_terminated(rerun.info.run_id, "FINISHED")
    if status is not None:
        client.set_terminated(parent, status)
    for path, size in (
        (store.journal_path(name), FILES["journal"]),
        (store.experiment_dir(name) / "trial_0" / "checkpoint.pt", FILES["checkpoint"]),
        (store.reports_dir(name) / "best_per_method.md", FILES["report"]),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"z" * size)
    return store.record_path(name).stat().st_size + sum(FILES.values()) + ARTIFACT * len(trials)


def rows_by_name(echo=lambda line: None) -> dict[str, StudyRow]:
    return {row.name: row for row in catalog.study_rows(echo)}


def test_mlflow_keeps_a_deleted_experiments_name(home, client):
    """Why ``delete`` renames first: deleting alone leaves the name taken, in MLflow 3.17."""
    client.delete_experiment(client.create_experiment("plain-delete"))
    with pytest.raises(MlflowException, match="already exists"):
        client.create_experiment("plain-delete")
    assert client.get_experiment_by_name("plain-delete").lifecycle_stage == "deleted"
    with pytest.raises(InputError, match="already has a study of that name"):
        tracking.create_study(client, "plain-delete", home, store.artifacts_dir("plain-delete"))


def test_the_listing_shows_name_state_trials_best_and_disk(home, client):
    size = make_study(
        client,
        "ls-done",
        [
            ("softmax", None, 0.40),
            ("gumbel", None, 0.55),
            ("teacher", "r2c", 0.50),
            ("reinforce", None, None),
        ],
    )
    make_study(client, "ls-cut", [("softmax", None, 0.30)], status=None)  # parent left RUNNING
    make_study(
        client,
        "ls-failed",
        [("teacher", "new baseline", 0.61), ("teacher", None, 0.2)],
        status="FAILED",
    )
    dead = f"http://127.0.0.1:{free_port()}"  # records naming stores that cannot be read
    for name, uri in (("ls-nodb", f"sqlite:///{home / 'gone.db'}"), ("ls-dead", dead)):
        store.save(
            store.StudyRecord(
                store.LaunchOptions(name=name, tracking_uri=uri, features=FEATURES), "0123abcd"
            )
        )
    store.journal_path("ls-nodb").write_bytes(b"j" * FILES["journal"])
    (home / "studies" / "ls-norecord").mkdir()  # a launch that stopped before its study started

    said = []
    rows = rows_by_name(said.append)
    assert rows["ls-done"] == StudyRow(
        "ls-done", "finished", 4, Best(0.55, "gumbel", "gumbel"), size
    )
    assert (rows["ls-cut"].state, rows["ls-cut"].trials) == ("interrupted", 1)
    assert rows["ls-failed"].state == "failed"
    assert rows["ls-failed"].best == Best(0.61, "new baseline", "teacher")
    assert rows["ls-nodb"].state == f"unknown (no tracking store at {home / 'gone.db'})"
    assert not (home / "gone.db").exists()  # listing never creates a store
    assert rows["ls-nodb"].trials is None and rows["ls-nodb"].best is None
    assert rows["ls-nodb"].disk_bytes == (
        store.record_path("ls-nodb").stat().st_size + FILES["journal"]
    )
    assert rows["ls-dead"].state.startswith(f"unknown (--tracking-uri {dead}: no MLflow server")
    assert rows["ls-norecord"].state.startswith("unknown (no study.json")
    assert len(said) == 2 and any(dead in line for line in said)

    table = catalog.format_table(list(rows.values()))
    header, *lines = table.splitlines()
    assert header.split()[:4] == ["NAME", "TRIALS", "BEST", "dev_q2ar"]
    done = next(line for line in lines if line.startswith("ls-done "))
    assert done.split() == [
        "ls-done",
        "4",
        "0.5500",
        "gumbel",
        *catalog.human_size(size).split(),
        "finished",
    ]
    assert "0.6100 new baseline (teacher)" in table
    assert table.endswith(catalog.RESUME_HINT)


@pytest.mark.parametrize(
    "size, text",
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (12_345_678, "12.3 MB"),
        (999_960, "1.0 MB"),
        (1_234_567_890, "1.2 GB"),
        (5 * 10**15, "5000.0 TB"),
    ],
)
def test_sizes_read_as_people_write_them(size, text):
    assert catalog.human_size(size) == text


def test_deleting_removes_every_folder_and_the_experiment_and_frees_the_name(home, client):
    size = make_study(client, "del-me", [("softmax", None, 0.4), ("gumbel", None, 0.5)])
    make_study(client, "del-keep", [("softmax", None, 0.3)])
    experiment = client.get_experiment_by_name("del-me")
    artifacts = home / "mlartifacts" / "del-me"
    folders = [
        store.study_dir("del-me"),
        store.experiment_dir("del-me"),
        store.reports_dir("del-me"),
        artifacts,
    ]
    assert all(f.is_dir() for f in folders)
    sizes = [catalog.human_size(catalog.disk_bytes(f)) for f in folders]
    assert catalog.describe_deletion("del-me") == (
        f"delete study del-me: 4 folders ({catalog.human_size(size)}) and MLflow experiment del-me"
    )

    lines = catalog.delete_study("del-me")
    assert lines[0].startswith(
        f"deleted MLflow experiment del-me (id {experiment.experiment_id}), renamed del-me.deleted-"
    )
    # studies/<name>/ is counted as it is removed: with the lock delete holds meanwhile
    assert lines[1].startswith(f"removed {folders[0]} (") and lines[1].endswith(" kB)")
    assert lines[2:] == [f"removed {f} ({s})" for f, s in zip(folders[1:], sizes[1:], strict=True)]
    assert not any(f.exists() for f in folders)
    assert client.get_experiment_by_name("del-me") is None
    gone = client.get_experiment(experiment.experiment_id)
    assert gone.lifecycle_stage == "deleted" and gone.name.startswith("del-me.deleted-")
    assert "del-me" not in rows_by_name() and "del-keep" in rows_by_name()
    assert store.load("del-keep").options.name == "del-keep"

    parent = tracking.create_study(
        client, "del-me", home, store.artifacts_dir("del-me")
    )  # the name can be used again
    again = client.get_experiment(client.get_run(parent).info.experiment_id)
    assert again.experiment_id != experiment.experiment_id and again.name == "del-me"
    assert again.lifecycle_stage == "active"
    store.save(store.StudyRecord(store.LaunchOptions(name="del-me", features=FEATURES), parent))
    second = catalog.delete_study("del-me")  # twice in one second: another tombstone
    assert second[0].startswith("deleted MLflow experiment del-me")
    assert client.get_experiment_by_name("del-me") is None


def test_delete_refuses_while_another_process_runs_the_study(home, client):
    make_study(client, "del-busy", [("softmax", None, 0.4)], status=None)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom study import store\n"
            "with store.running('del-busy'):\n    print('locked', flush=True)\n    time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert rows_by_name()["del-busy"].state == "running"
        for attempt in (catalog.describe_deletion, catalog.delete_study):
            with pytest.raises(InputError, match="the study is running") as error:
                attempt("del-busy")
            assert "\n" not in str(error.value)
        assert store.record_path("del-busy").is_file()
        assert client.get_experiment_by_name("del-busy").lifecycle_stage == "active"
    finally:
        holder.kill()
        holder.wait()
    assert rows_by_name()["del-busy"].state == "interrupted"
    catalog.delete_study("del-busy")
    assert not store.study_dir("del-busy").exists()


def test_a_name_found_nowhere_is_one_line(home, client):
    uri = "sqlite:///" + str(home / "mlflow.db")
    with pytest.raises(InputError) as error:
        catalog.delete_study("never-was")
    assert str(error.value) == (
        f"--name never-was: no such study in {home} or in the tracking store {uri}"
    )
    secret = f"http://user:hunter2@127.0.0.1:{free_port()}"
    with pytest.raises(InputError) as error:
        catalog.describe_deletion("never-was", secret)
    assert "hunter2" not in str(error.value) and "\n" not in str(error.value)
    for bad in ("..", ".", "a/b", ""):
        with pytest.raises(InputError, match="use letters, digits"):
            catalog.delete_study(bad)
    assert home.is_dir()


def test_a_study_only_in_the_tracking_store_is_deleted_from_it(home, client, tmp_path):
    shared = f"sqlite:///{tmp_path / 'shared.db'}"  # another home's study, in a store of its own
    other = tmp_path / "other-home"
    elsewhere = MlflowClient(shared)
    tracking.create_study(elsewhere, "away", other, other / "mlartifacts" / "away")
    assert catalog.describe_deletion("away", shared) == (
        f"delete study away: MLflow experiment away in {shared} (its study run is marked "
        "running: stop any launch of it elsewhere first)"
    )
    lines = catalog.delete_study("away", shared)
    assert len(lines) == 1 and lines[0].startswith(
        f"deleted MLflow experiment away (id 1) in {shared}, renamed away.deleted-"
    )
    assert elsewhere.get_experiment_by_name("away") is None

    parent = tracking.create_study(
        client, "orphan", home, store.artifacts_dir("orphan")
    )  # this home's, its folder removed
    run = client.create_run(client.get_run(parent).info.experiment_id)
    client.log_text(run.info.run_id, "y" * ARTIFACT, "config.json")
    artifacts = home / "mlartifacts" / "orphan"
    assert artifacts.is_dir() and not store.study_dir("orphan").exists()
    assert catalog.describe_deletion("orphan").startswith(
        f"delete study orphan: 1 folder ({catalog.human_size(ARTIFACT)}) and MLflow experiment"
    )
    assert catalog.delete_study("orphan")[1] == (
        f"removed {artifacts} ({catalog.human_size(ARTIFACT)})"
    )
    assert not artifacts.exists() and client.get_experiment_by_name("orphan") is None

    client.delete_experiment(client.create_experiment("deleted-by-hand"))  # in the MLflow UI
    assert "(deleted already, but its name is still taken)" in catalog.describe_deletion(
        "deleted-by-hand"
    )
    catalog.delete_study("deleted-by-hand")
    client.create_experiment("deleted-by-hand")  # the name is free
