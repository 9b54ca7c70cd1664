"""Bad input, across search spaces, dataset files, CLI arguments, addresses and URIs, and
checkpoints: each gets one line on stderr naming the culprit, exit code 2, and nothing written.

docs/reliability.md lists every case of BAD_INPUTS with the message it gets; a test checks that
the list and this table agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, free_port, read_lines, wait_until_answers, write_lines


@dataclass
class Where:
    """What a case may use: a scratch folder, a private copy of the synthetic data, its cache,
    and a live MLflow server's URI."""

    tmp: Path
    vcr: Path
    cache: Path
    server: str

    def space(self, text: str) -> Path:
        path = self.tmp / "bad.yaml"
        path.write_text(text)
        return path

    def launch(self, *args) -> list:
        return [
            "launch",
            "--data",
            self.vcr,
            "--cache",
            self.cache,
            "--image-size",
            "256x128",
            *args,
        ]

    def edit_line(self, index: int, change: Callable[[dict], None]) -> None:
        lines = read_lines(self.vcr / "train.jsonl")
        change(lines[index])
        write_lines(self.vcr / "train.jsonl", lines)

    def checkpoint(self, content: bytes | None = None, obj: object = None) -> Path:
        path = self.tmp / "checkpoint.pt"
        if content is not None:
            path.write_bytes(content)
        elif obj is not None:
            torch.save(obj, path)
        return path


def _truncated(w: Where) -> Path:
    good = w.tmp / "good.pt"
    torch.save({"config": {}, "text_dim": 1, "model": {"w": torch.zeros(1000)}, "epoch": 1}, good)
    return w.checkpoint(good.read_bytes()[:200])


def _latin1_line(w: Where) -> None:
    """train.jsonl's second line with one Latin-1 byte (as a file saved in another encoding)."""
    lines = (w.vcr / "train.jsonl").read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"', b'"\xe9', 1)
    (w.vcr / "train.jsonl").write_bytes(b"\n".join(lines))


def _huge_box(w: Where) -> None:
    """The first train image's metadata with a box beyond float32."""
    import json

    meta = w.vcr / "vcr1images" / read_lines(w.vcr / "train.jsonl")[0]["metadata_fn"]
    data = json.loads(meta.read_text())
    data["boxes"][0][2] = 1e39
    meta.write_text(json.dumps(data))


def _evaluate(w: Where, spoil: Callable[[list[str]], None]) -> list:
    """``evaluate`` of a val CSV of uniform probabilities whose first row ``spoil`` changes."""
    import csv

    from vcrnet.leaderboard import write_csv

    ids = [line["annot_id"] for line in read_lines(w.vcr / "val.jsonl")]
    n = len(ids)
    path = write_csv(
        w.tmp / "probs.csv", ids, torch.full((n, 4), 0.25), torch.full((n, 4, 4), 0.25)
    )
    rows = list(csv.reader(path.open()))
    spoil(rows[1])
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return ["evaluate", "--predictions", path, "--data", w.vcr, "--split", "val"]


SPACE_HEAD = "description: bad\nfixed: {epochs: 1}\nparams:\n"

# (id, kind, the arguments given w, a regex the one line must match)
BAD_INPUTS: list[tuple[str, str, Callable[[Where], list], str]] = [
    (
        "space-unknown-method",
        "search space",
        lambda w: w.launch("--space", w.space(SPACE_HEAD + "  method: {choice: [softmax, foo]}\n")),
        r"bad\.yaml:4: params\.method: method: must be one of softmax, .* \(got 'foo'\)",
    ),
    (
        "space-low-not-below-high",
        "search space",
        lambda w: w.launch("--space", w.space(SPACE_HEAD + "  lr: {uniform: [0.1, 0.01]}\n")),
        r"bad\.yaml:4: params\.lr: uniform: low must be below high \(got 0\.1 >= 0\.01\)",
    ),
    (
        "space-non-positive-log-bound",
        "search space",
        lambda w: w.launch("--space", w.space(SPACE_HEAD + "  lr: {loguniform: [0, 0.1]}\n")),
        r"bad\.yaml:4: params\.lr: loguniform: a log scale needs a positive low bound",
    ),
    (
        "space-empty-choice",
        "search space",
        lambda w: w.launch("--space", w.space(SPACE_HEAD + "  method: {choice: []}\n")),
        r"bad\.yaml:4: params\.method: choice: needs a non-empty list",
    ),
    (
        "space-unknown-key",
        "search space",
        lambda w: w.launch("--space", w.space(SPACE_HEAD + "  learning_rate: {uniform: [0, 1]}\n")),
        r"bad\.yaml:4: params\.learning_rate: unknown key",
    ),
    (
        "space-row-objective-not-a-dev-reading",
        "search space",
        lambda w: w.launch(
            "--space",
            w.space("trials:\n  - {method: softmax}\n  - {method: softmax, objective: val_q2ar}\n"),
        ),
        r"bad\.yaml:3: trials\.1: objective: must be one of dev_q2a, ",
    ),
    (
        "space-yaml-syntax",
        "search space",
        lambda w: w.launch("--space", w.space(SPACE_HEAD + "  lr: {uniform: [0.1, 0.2\n")),
        r"bad\.yaml:\d+: ",
    ),
    (
        "space-missing-file",
        "search space",
        lambda w: w.launch("--space", w.tmp / "nope.yaml"),
        r"nope\.yaml",
    ),
    (
        "data-malformed-json",
        "dataset",
        lambda w: (
            (w.vcr / "train.jsonl").write_text(
                (w.vcr / "train.jsonl").read_text().replace("}\n", "\n", 1)
            ),
            ["data", "check", w.vcr],
        )[1],
        r"train\.jsonl:1: malformed JSON",
    ),
    (
        "data-missing-key",
        "dataset",
        lambda w: (w.edit_line(2, lambda d: d.pop("question")), ["data", "check", w.vcr])[1],
        r"train\.jsonl:3: question: missing key",
    ),
    (
        "data-label-out-of-range",
        "dataset",
        lambda w: (w.edit_line(0, lambda d: d.update(answer_label=7)), ["data", "check", w.vcr])[1],
        r"train\.jsonl:1: answer_label: 7 is not in 0\.\.3",
    ),
    (
        "data-object-index-beyond-objects",
        "dataset",
        lambda w: (w.edit_line(1, lambda d: d["question"].append([99])), ["data", "check", w.vcr])[
            1
        ],
        r"train\.jsonl:2: question\[\d+\]: object index 99 is beyond objects",
    ),
    (
        "data-missing-image",
        "dataset",
        lambda w: (
            (w.vcr / "vcr1images" / read_lines(w.vcr / "train.jsonl")[0]["img_fn"]).unlink(),
            ["data", "check", w.vcr],
        )[1],
        r"train\.jsonl:1: img_fn: no such image file",
    ),
    (
        "data-corrupt-metadata",
        "dataset",
        lambda w: (
            next((w.vcr / "vcr1images").rglob("*.json")).write_text("{"),
            ["data", "check", w.vcr],
        )[1],
        r"\.json: malformed JSON",
    ),
    (
        "data-no-such-directory",
        "dataset",
        lambda w: ["data", "check", w.tmp / "nowhere"],
        r"nowhere",
    ),
    (
        "cli-trials-zero",
        "CLI argument",
        lambda w: w.launch("--trials", "0"),
        r"--trials: must be at least 1",
    ),
    (
        "cli-cpus-per-trial-zero",
        "CLI argument",
        lambda w: w.launch("--cpus-per-trial", "0"),
        r"--cpus-per-trial: must be positive",
    ),
    (
        "cli-unknown-searcher",
        "CLI argument",
        lambda w: w.launch("--searcher", "grid-ish"),
        r"--searcher: must be one of tpe, random",
    ),
    (
        "cli-set-not-an-int",
        "CLI argument",
        lambda w: w.launch("--set", "batch_size=many"),
        r"--set: batch_size: .*not an int",
    ),
    (
        "cli-set-unknown-key",
        "CLI argument",
        lambda w: w.launch("--set", "bogus=1"),
        r"--set: .*bogus",
    ),
    (
        "cli-set-searched-key",
        "CLI argument",
        lambda w: w.launch("--set", "lr=0.1"),
        r"--set lr: is searched by default\.yaml",
    ),
    (
        "cli-bad-name",
        "CLI argument",
        lambda w: w.launch("--name", "a b"),
        r"--name 'a b': use letters, digits",
    ),
    (
        "cli-bad-image-size",
        "CLI argument",
        lambda w: ["launch", "--image-size", "12"],
        r"--image-size.*'12' is not WIDTHxHEIGHT",
    ),
    (
        "cli-not-an-integer",
        "CLI argument",
        lambda w: ["launch", "--trials", "x"],
        r"'--trials'.*valid integer",
    ),
    (
        "cli-unknown-study",
        "CLI argument",
        lambda w: ["best", "--name", "nosuch"],
        r"--name nosuch: no such study",
    ),
    (
        "cli-resume-without-name",
        "CLI argument",
        lambda w: w.launch("--resume"),
        r"--resume: needs --name",
    ),
    ("cli-unknown-command", "CLI argument", lambda w: ["lunch"], r"No such command 'lunch'"),
    (
        "cli-seed-negative",
        "CLI argument",
        lambda w: w.launch("--seed", "-1"),
        r"--seed: must be in 0\.\.4294967295",
    ),
    (
        "cli-cpus-below-ray-unit",
        "CLI argument",
        lambda w: w.launch("--cpus-per-trial", "0.00001"),
        r"--cpus-per-trial: must be a multiple of 0\.0001 \(Ray's unit\)",
    ),
    (
        "cli-gpus-fraction-above-one",
        "CLI argument",
        lambda w: w.launch("--gpus-per-trial", "1.5"),
        r"--gpus-per-trial: must be a fraction of 1 or whole",
    ),
    (
        "cli-name-too-long",
        "CLI argument",
        lambda w: w.launch("--name", "a" * 300),
        r"--name a{20}\.\.\.: 300 characters, at most 100",
    ),
    (
        "resources-cpus-beyond-machine",
        "resources",
        lambda w: w.launch("--cpus-per-trial", "4096"),
        r"--cpus-per-trial 4096: this machine has \d+ CPUs, so no trial could ever start",
    ),
    (
        "resources-gpus-beyond-machine",
        "resources",
        lambda w: w.launch("--gpus-per-trial", "64"),
        r"--gpus-per-trial 64: this machine has .*, so no trial could ever start",
    ),
    (
        "resources-dry-run-refuses-too",
        "resources",
        lambda w: [*w.launch("--cpus-per-trial", "4096"), "--dry-run"],
        r"--cpus-per-trial 4096: this machine has \d+ CPUs",
    ),
    (
        "name-climbs-out-of-home",
        "name or path",
        lambda w: ["ablations", "--name", "../.."],
        r"--name '\.\./\.\.': use letters, digits",
    ),
    (
        "name-climbs-out-of-home-rerun",
        "name or path",
        lambda w: ["rerun", "--name", "../other"],
        r"--name '\.\./other': use letters, digits",
    ),
    (
        "runs-uri-climbs-out-of-run",
        "name or path",
        lambda w: [
            "predict",
            "--checkpoint",
            "runs:/" + "0" * 32 + "/../../weights.pt",
            "--out",
            w.tmp / "out.csv",
        ],
        r"the path must stay inside the run's artifacts",
    ),
    (
        "predict-out-is-a-folder",
        "name or path",
        lambda w: ["predict", "--checkpoint", w.tmp / "none.pt", "--out", w.tmp],
        r"--out .*scratch: is a folder; give the CSV's file name",
    ),
    (
        "cli-set-out-of-range",
        "setting",
        lambda w: w.launch("--set", "lr_factor=1.5"),
        r"--set: lr_factor: must be in \(0, 1\)",
    ),
    (
        "train-set-out-of-range",
        "setting",
        lambda w: ["train", "--out", w.tmp / "run", "--set", "grad_clip=0"],
        r"grad_clip: must be positive",
    ),
    (
        "train-device-cuda-without-a-gpu",
        "CLI argument",
        lambda w: ["train", "--out", w.tmp / "run", "--device", "cuda"],
        r"--device cuda: torch sees no CUDA GPU on this machine; pass --device auto or cpu",
    ),
    (
        "predict-device-unknown",
        "CLI argument",
        lambda w: [
            "predict",
            "--checkpoint",
            w.tmp / "none.pt",
            "--out",
            w.tmp / "p.csv",
            "--device",
            "tpu",
        ],
        r"--device tpu: must be one of auto, cpu, cuda",
    ),
    (
        "cli-image-size-too-large",
        "CLI argument",
        lambda w: w.launch("--image-size", "30000x30000"),
        r"'30000x30000': both sides must be at most 4096 pixels",
    ),
    (
        "data-not-utf8",
        "input not what it claims",
        lambda w: (_latin1_line(w), ["data", "check", w.vcr])[1],
        r"train\.jsonl:2: not UTF-8",
    ),
    (
        "data-no-items",
        "input not what it claims",
        lambda w: ((w.vcr / "train.jsonl").write_text("\n"), ["data", "check", w.vcr])[1],
        r"train\.jsonl: no items",
    ),
    (
        "data-box-beyond-float32",
        "input not what it claims",
        lambda w: (_huge_box(w), ["data", "check", w.vcr])[1],
        r"\.json: boxes\[0\]: .* is not a finite float32 number",
    ),
    (
        "csv-not-a-probability",
        "input not what it claims",
        lambda w: _evaluate(w, lambda row: row.__setitem__(3, "nan")),
        r"probs\.csv:2: answer_2: nan is not a probability in \[0, 1\]",
    ),
    (
        "csv-rows-not-summing-to-one",
        "input not what it claims",
        lambda w: _evaluate(w, lambda row: row.__setitem__(1, "0.05")),
        r"probs\.csv:2: answer_0\.\.3 sum to .*, not 1",
    ),
    (
        "checkpoint-field-of-wrong-type",
        "checkpoint",
        lambda w: [
            "predict",
            "--checkpoint",
            w.checkpoint(obj={"config": {}, "text_dim": "12", "model": {}, "epoch": 1}),
            "--out",
            w.tmp / "out.csv",
        ],
        r"checkpoint\.pt: text_dim: expected a positive int",
    ),
    (
        "ui-port-in-use",
        "name or path",
        lambda w: ["ui", "--port", w.server.rsplit(":", 1)[1]],
        r"--port \d+: 127\.0\.0\.1:\d+ cannot be served",
    ),
    (
        "address-without-port",
        "address or URI",
        lambda w: w.launch("--address", "10.0.0.5"),
        r"--address '10\.0\.0\.5': expected HOST:PORT",
    ),
    (
        "address-nothing-listening",
        "address or URI",
        lambda w: w.launch("--address", "127.0.0.1:1", "--tracking-uri", w.server),
        r"--address 127\.0\.0\.1:1: no Ray cluster answers there",
    ),
    (
        "tracking-unsupported-scheme",
        "address or URI",
        lambda w: w.launch("--tracking-uri", "ftp://user:secret@example.org/x"),
        r"--tracking-uri ftp://example\.org/x: unsupported scheme 'ftp'",
    ),
    (
        "tracking-server-not-answering",
        "address or URI",
        lambda w: w.launch("--tracking-uri", "http://127.0.0.1:1"),
        r"--tracking-uri http://127\.0\.0\.1:1: no MLflow server answers there",
    ),
    (
        "tracking-local-store-with-cluster",
        "address or URI",
        lambda w: w.launch("--address", "127.0.0.1:6379"),
        r"--tracking-uri sqlite:.*local MLflow store cannot serve a Ray cluster",
    ),
    (
        "checkpoint-truncated",
        "checkpoint",
        lambda w: ["predict", "--checkpoint", _truncated(w), "--out", w.tmp / "out.csv"],
        r"checkpoint\.pt: not a readable checkpoint",
    ),
    (
        "checkpoint-not-a-checkpoint",
        "checkpoint",
        lambda w: [
            "predict",
            "--checkpoint",
            w.checkpoint(obj={"weights": [1, 2]}),
            "--out",
            w.tmp / "out.csv",
        ],
        r"checkpoint\.pt: not a vcr-study checkpoint \(missing",
    ),
    (
        "checkpoint-garbage",
        "checkpoint",
        lambda w: [
            "predict",
            "--checkpoint",
            w.checkpoint(b"not a zip file at all"),
            "--out",
            w.tmp / "out.csv",
        ],
        r"checkpoint\.pt: not a readable checkpoint",
    ),
    (
        "checkpoint-missing",
        "checkpoint",
        lambda w: ["predict", "--checkpoint", w.tmp / "none.pt", "--out", w.tmp / "out.csv"],
        r"none\.pt: no such checkpoint",
    ),
]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    import os
    import signal
    import subprocess
    import sys

    port, root = free_port(), tmp_path_factory.mktemp("mlflow")
    server = subprocess.Popen(
        [
            Path(sys.executable).parent / "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{uri}/health", server, "mlflow server")
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _snapshot(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_one_line_and_exit_code_2(
    case, cli, tmp_path, monkeypatch, vcr_copy, synthetic_features, mlflow_server
):
    _, _, make_args, pattern = case
    home = tmp_path / "home"
    monkeypatch.setenv("VCR_STUDY_HOME", str(home))
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    w = Where(scratch, vcr_copy, synthetic_features.text.parent, mlflow_server)
    args = make_args(w)
    before = _snapshot(tmp_path)
    code, out, err = cli(*args)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    print(f"BAD-INPUT {case[0]} | {lines[0]}")  # shown by -s: docs/reliability.md quotes these
    assert "secret" not in err  # credentials in a URI are never echoed
    assert _snapshot(tmp_path) == before, "a bad input wrote something"
    assert not home.exists()


def test_docs_list_every_bad_input():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9-]+)` \|", doc, flags=re.M))
    assert listed == {c[0] for c in BAD_INPUTS}
    assert len(BAD_INPUTS) >= 20


@pytest.mark.parametrize("command", [["launch", "--dry-run"], ["launch", "--name", "x"]])
def test_a_home_that_is_a_file_is_one_line_before_anything(command, cli, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("VCR_STUDY_HOME", str(home / "runs"))
    code, out, err = cli(*command)
    assert code == 2 and err.count("\n") == 1, err
    assert f"VCR_STUDY_HOME {home / 'runs'}: {home} is a file, not a folder" in err
    assert home.read_text() == "not a folder" and sorted(tmp_path.iterdir()) == [home]


def test_a_relative_tracking_uri_is_made_absolute(tmp_path, monkeypatch):
    """``sqlite:///x.db`` names a file in the working directory: a study saved with it would not
    find its store from another folder; the study keeps the absolute path instead."""
    from study.tracking import absolute_uri

    monkeypatch.chdir(tmp_path)
    assert absolute_uri("sqlite:///x.db") == f"sqlite:///{tmp_path / 'x.db'}"
    assert absolute_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert absolute_uri("sqlite:///x.db?timeout=5") == f"sqlite:///{tmp_path / 'x.db'}?timeout=5"
    assert absolute_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert absolute_uri("runs") == str(tmp_path / "runs")
