"""What a launch checks before it writes anything, called directly (no Ray started)."""

from __future__ import annotations

import hashlib
import warnings

import pytest

from study import store
from study.launch import preflight
from study.store import LaunchOptions, StudyRecord
from vcrnet.errors import InputError

SPACE = "description: s\nfixed: {epochs: 1}\ntrials:\n  - {method: softmax}\n"
FEATURES = {"text_encoder": "minilm", "text_layer": -2, "image_size": [256, 128]}


@pytest.fixture
def saved(tmp_path, monkeypatch):
    """A study's record, its space file beside it, as a launch left them."""
    monkeypatch.setenv("VCR_STUDY_HOME", str(tmp_path / "home"))
    space = tmp_path / "s.yaml"
    space.write_text(SPACE)
    digest = hashlib.sha256(space.read_bytes()).hexdigest()
    options = LaunchOptions(name="s1", space=str(space), features=FEATURES, space_sha256=digest)
    store.save(StudyRecord(options, "parent"))
    return space


def test_a_resume_refuses_a_space_file_changed_since_the_study_started(saved):
    options, space, _ = preflight.resolved_options(LaunchOptions(name="s1"), resume=True)
    assert space.path == saved and options.space_sha256
    saved.write_text(SPACE.replace("epochs: 1", "epochs: 2"))
    with pytest.raises(InputError, match=r"s\.yaml: the file changed since study s1 started"):
        preflight.resolved_options(LaunchOptions(name="s1"), resume=True)


def test_a_resume_takes_the_resources_given_and_names_what_it_ignores(saved):
    given = LaunchOptions(name="s1", cpus_per_trial=0.5, max_failures=5, trials=3, asha=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        options, _, _ = preflight.resolved_options(given, resume=True)
    assert (options.cpus_per_trial, options.max_failures) == (0.5, 5)
    assert (options.trials, options.asha) == (8, True)  # the study's own
    assert [str(w.message).split(" ignored")[0] for w in caught] == ["--resume: --trials, --asha"]


def test_resources_this_machine_never_has_are_refused(monkeypatch):
    monkeypatch.setattr(preflight, "local_resources", lambda: (2.0, 0.0))
    preflight.check_resources(LaunchOptions(cpus_per_trial=2), None)
    with pytest.raises(InputError, match=r"--cpus-per-trial 2\.5: this machine has 2 CPUs"):
        preflight.check_resources(LaunchOptions(cpus_per_trial=2.5), None)
    with pytest.raises(InputError, match=r"--gpus-per-trial 0\.25: this machine has no GPU"):
        preflight.check_resources(LaunchOptions(gpus_per_trial=0.25), None)
