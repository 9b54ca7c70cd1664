"""Feature settings: one description, one rule for which features a command reads, every command
checking its data folder first (study.inputs, vcrnet.features.settings)."""

from __future__ import annotations

import pytest
import torch

from vcrnet.errors import InputError
from vcrnet.features import FeatureChoice, FeatureSettings

NON_DEFAULT = ("--image-size", "256x128", "--text-layer", "-1")


def test_settings_round_trip_through_dicts_and_strings():
    settings = FeatureSettings(
        text_encoder="bert-base-uncased",
        text_layer=-1,
        image_weights="/w/resnet50.pth",
        image_size=(640, 320),
    )
    assert FeatureSettings.from_dict(settings.to_dict()) == settings
    as_params = {k: str(v) for k, v in settings.to_dict().items()}  # MLflow params
    assert FeatureSettings.from_dict(as_params) == settings
    assert FeatureSettings.from_dict({"image_weights": "None"}).image_weights is None
    with pytest.raises(InputError, match="unknown feature setting 'colour'"):
        FeatureSettings.from_dict({"colour": "red"})
    with pytest.raises(InputError, match="at least 32 pixels"):
        FeatureSettings(image_size=(16, 16))


def test_a_choice_selects_fills_and_guards():
    chosen = FeatureChoice(text_layer=-1, image_size=(256, 128))
    assert chosen.matches(FeatureSettings(text_layer=-1, image_size=(256, 128)))
    assert not chosen.matches(FeatureSettings(image_size=(256, 128)))
    assert chosen.apply(FeatureSettings()) == FeatureSettings(text_layer=-1, image_size=(256, 128))
    chosen.check_agrees(FeatureSettings(text_layer=-1, image_size=(256, 128)), "x")
    with pytest.raises(InputError, match=r"--text-layer -1: run.pt was trained on -2"):
        chosen.check_agrees(FeatureSettings(image_size=(256, 128)), "run.pt")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("VCR_STUDY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _entries(home):
    return sorted(p.name for p in (home / "cache").iterdir())


def test_train_and_predict_reuse_the_features_extracted_with_chosen_options(
    home, cli, synthetic_dir, tmp_path
):
    code, out, err = cli("data", "features", synthetic_dir, *NON_DEFAULT)
    assert code == 0, err
    assert "extracting features once for train, val, test" in out and "layer -1" in out
    assert "no --text-encoder given" in err  # the offline encoder is named, with what to pass
    extracted = _entries(home)
    assert len(extracted) == 6

    run = tmp_path / "run"
    code, out, err = cli(
        "train",
        "--data",
        synthetic_dir,
        "--out",
        run,
        "--epochs",
        "1",
        "--set",
        "preset=tiny",
        "--set",
        "batch_size=8",
    )
    assert code == 0, err
    assert "using the features already extracted" in out and "256x128" in out
    assert "warning" not in err  # no silent (or loud) fallback to other features
    assert _entries(home) == extracted  # nothing extracted again
    saved = torch.load(run / "best.pt", weights_only=True)
    assert FeatureSettings.from_dict(saved["extra"]["features"]) == FeatureSettings(
        text_layer=-1, image_size=(256, 128)
    )

    csv = tmp_path / "test.csv"
    code, out, err = cli("predict", "--checkpoint", run / "best.pt", "--out", csv)
    assert code == 0, err  # the checkpoint's data folder and features, without options
    assert len(csv.read_text().splitlines()) == 1 + 9
    assert _entries(home) == extracted
    code, out, err = cli(
        "evaluate", "--predictions", csv, "--data", synthetic_dir, "--split", "test"
    )  # the built-in data keeps its test labels aside
    assert code == 0 and "9 items: Q->A" in out, err
    code, out, err = cli(
        "predict", "--checkpoint", run / "best.pt", "--out", csv, "--text-layer", "-2"
    )
    assert code == 2 and err.count("\n") == 1
    assert "--text-layer -2: " in err and "trained on -1" in err
    code, out, err = cli(
        "train", "--data", synthetic_dir, "--out", run, "--resume", "--image-size", "384x192"
    )  # resuming keeps the checkpoint's features
    assert code == 2 and "--image-size 384x192: " in err and "trained on 256x128" in err

    # a second feature set for the same data: a command given no options must ask
    code, out, err = cli(
        "data",
        "features",
        synthetic_dir,
        "--split",
        "train",
        "--split",
        "val",
        "--image-size",
        "224x112",
    )
    assert code == 0, err  # the options not given come from the set already extracted
    assert "extracting features once for train, val" in out and "(layer -1)" in out
    assert "train text: cached" in out and "train objects: extracted" in out
    assert "no --text-encoder given" not in err
    code, out, err = cli("train", "--data", synthetic_dir, "--out", tmp_path / "run2")
    assert code == 2 and err.count("\n") == 1
    assert "feature sets are extracted" in err and "--image-size" in err
    assert not (tmp_path / "run2").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (("data", "features", "{missing}"), "no such directory (given as DATA)"),
        (
            ("data", "features", "{no_val}"),
            "no val.jsonl; it has train.jsonl, test.jsonl: pass --split train --split test",
        ),
        (("train", "--data", "{no_val}", "--out", "{tmp}/r"), "no val.jsonl; it has train.jsonl"),
        (("launch", "--data", "{missing}"), "no such directory (given as --data)"),
        (("data", "prepare", "--data", "{missing}"), "no such directory (given as --data)"),
        (("evaluate", "--predictions", "{tmp}/p.csv", "--data", "{no_val}"), "no val.jsonl"),
        (("data", "features", "{no_images}", "--split", "val"), "no vcr1images/ folder"),
    ],
)
def test_a_bad_data_folder_is_one_line_before_anything_is_written(
    home, cli, vcr_copy, tmp_path, args, expected
):
    no_val = tmp_path / "no_val"
    no_val.mkdir()
    for split in ("train", "test"):
        (no_val / f"{split}.jsonl").write_text((vcr_copy / f"{split}.jsonl").read_text())
    no_images = tmp_path / "no_images"
    no_images.mkdir()
    (no_images / "val.jsonl").write_text((vcr_copy / "val.jsonl").read_text())
    names = {
        "missing": tmp_path / "nope",
        "no_val": no_val,
        "no_images": no_images,
        "tmp": tmp_path,
    }
    code, out, err = cli(*(a.format(**names) for a in args))
    assert code == 2, err
    assert err.count("\n") == 1 and expected in err, err
    assert not home.exists() or not any((home / "cache").glob("*"))
    assert not (tmp_path / "r").exists()


def test_a_study_made_before_features_were_recorded_is_refused_in_one_line(home, cli):
    folder = home / "studies" / "old"
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(
        '{"name": "old", "text_encoder": "minilm", "parent_run_id": "x"}'
    )
    for command in (
        ("best", "--name", "old"),
        ("ablations", "--name", "old"),
        ("rerun", "--name", "old"),
        ("launch", "--name", "old", "--resume"),
    ):
        code, out, err = cli(*command)
        assert code == 2 and err.count("\n") == 1, (command, err)
        assert "made by an earlier vcr-study" in err and "launch a new study" in err
    code, out, err = cli("best", "--name", "old", "--metric", "val_q2ar")  # gone: it only refused
    assert code == 2 and "No such option: --metric" in err
