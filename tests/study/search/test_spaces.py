"""The search-space parser: a table of snippets and what they parse to, every error, and every
shipped YAML file."""

import optuna
import pytest

from study.search import SPACES_DIR, Param, load_space, parse_space
from vcrnet.couplings import COUPLINGS
from vcrnet.errors import InputError

PARSED = [
    (
        "params:\n  lr: {loguniform: [1.0e-4, 1.0e-2]}",
        Param("lr", "loguniform", (1e-4, 1e-2), log=True),
    ),
    ("params:\n  loss_ratio: {uniform: [0.5, 4]}", Param("loss_ratio", "uniform", (0.5, 4))),
    (
        "params:\n  num_samples: {int: [2, 64], log: true, methods: [reinforce]}",
        Param("num_samples", "int", (2, 64), log=True, methods=("reinforce",)),
    ),
    ("params:\n  epochs: {int: [1, 5]}", Param("epochs", "int", (1, 5))),
    (
        "params:\n  method: {choice: [softmax, gumbel]}",
        Param("method", "choice", ("softmax", "gumbel")),
    ),
    (
        "params:\n  anneal: {choice: [linear, exponential], methods: [gumbel]}",
        Param("anneal", "choice", ("linear", "exponential"), methods=("gumbel",)),
    ),
    (
        "params:\n  straight_through: {choice: [false, true]}",
        Param("straight_through", "choice", (False, True)),
    ),
    ("params:\n  hidden: {choice: [null, 32]}", Param("hidden", "choice", (None, 32))),
    ("params:\n  tau_end: {fixed: 0.5}", Param("tau_end", "fixed", 0.5)),
]


@pytest.mark.parametrize(
    "snippet, expected", PARSED, ids=[p.name + ":" + p.kind for _, p in PARSED]
)
def test_snippet_parses_to_distribution(snippet, expected):
    space = parse_space(snippet, "s.yaml")
    assert space.params[expected.name] == expected
    assert not space.is_grid


ERRORS = [  # (snippet, what the one-line message must contain)
    ("params:\n  method: {choice: [softmax, sigmoid]}", "s.yaml:2: params.method: method"),
    (
        "params:\n  lr: {uniform: [0.1, 0.2], methods: [sigmoid]}",
        "s.yaml:2: params.lr.methods: unknown method 'sigmoid'",
    ),
    (
        "params:\n  learning_rate: {uniform: [0.1, 0.2]}",
        "s.yaml:2: params.learning_rate: unknown key",
    ),
    ("paramz:\n  lr: {uniform: [0.1, 0.2]}", "s.yaml:1: paramz: unknown key"),
    ("params:\n  lr: {uniform: [0.2, 0.1]}", "params.lr: uniform: low must be below high"),
    ("params:\n  lr: {uniform: [0.1, 0.1]}", "low must be below high (got 0.1 >= 0.1)"),
    (
        "params:\n  lr: {loguniform: [0, 0.1]}",
        "params.lr: loguniform: a log scale needs a positive low bound (got 0)",
    ),
    ("params:\n  num_samples: {int: [-1, 8], log: true}", "positive low bound (got -1)"),
    ("params:\n  method: {choice: []}", "params.method: choice: needs a non-empty list"),
    ("params:\n  lr: {uniform: [0.1]}", "params.lr: uniform: needs [low, high]"),
    ("params:\n  epochs: {int: [1.5, 4]}", "params.epochs: int: bounds must be integers"),
    ("params:\n  lr: {normal: [0, 1]}", "params.lr: needs exactly one of"),
    ("params:\n  lr: {uniform: [0.1, 0.2], choice: [1]}", "needs exactly one of"),
    (
        "params:\n  correct_answer_rate: {uniform: [0.5, 1.5]}",
        "params.correct_answer_rate: correct_answer_rate: must be in 0..1",
    ),
    ("params:\n  batch_size: {choice: [8, many]}", "batch_size: 'many' is not an int"),
    ("params: {}", "params: must be a non-empty mapping"),
    ("fixed: {epochs: 2}", "give exactly one of params"),
    ("fixed: {epochs: 2}\nparams:\n  epochs: {int: [1, 3]}", "params.epochs: is also in fixed"),
    ("fixed: {epochz: 2}\nparams:\n  lr: {fixed: 0.1}", "s.yaml:1: fixed: unknown key 'epochz'"),
    ("trials:\n  - {method: teacher}\n  - {method: nope}", "s.yaml:3: trials.1: method: must"),
    ("trials: []", "trials: must be a non-empty list"),
    (
        "trials:\n  - {label: a, method: teacher}\n  - {label: a, method: softmax}",
        "s.yaml:3: trials.1.label: 'a' is used twice",
    ),
    ("trials:\n  - {label: 3, method: teacher}", "s.yaml:2: trials.0.label: must be a non-empty"),
    ("params:\n  lr: {uniform: [0.1, 0.2]\n", "s.yaml:3: not valid YAML"),
    ("- a\n- b", "s.yaml: a search space is a mapping"),
]


@pytest.mark.parametrize("snippet, message", ERRORS)
def test_bad_space_is_one_line_naming_file_and_key(snippet, message):
    with pytest.raises(InputError) as err:
        parse_space(snippet, "s.yaml")
    text = str(err.value)
    assert message in text and "\n" not in text, text


@pytest.mark.parametrize("path", sorted(SPACES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_space_is_valid_and_samples_valid_configs(path):
    space = load_space(path.stem)
    assert space.description
    if space.is_grid:
        configs = [space.config(t) for t in space.trials]
    else:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        configs = []
        for _ in range(50):
            trial = study.ask()
            constants = space.suggest(trial)
            configs.append(space.config({**trial.params, **constants}))
            study.tell(trial, 0.0)
    assert {c.method for c in configs} == set(space.methods())


def test_paper_grid_is_the_papers_experiments():
    space = load_space("paper")
    configs = [space.config(t) for t in space.trials]
    rates = sorted(c.correct_answer_rate for c in configs if c.method == "teacher")
    assert rates == [0.75, 1.0]
    assert {(c.method, c.loss_ratio) for c in configs if c.method in ("softmax", "gumbel")} == {
        ("softmax", 1.0),
        ("softmax", 4.0),
        ("gumbel", 1.0),
        ("gumbel", 4.0),
    }
    gumbel = next(c for c in configs if c.method == "gumbel")
    assert (gumbel.tau_start, gumbel.tau_end, gumbel.anneal_epochs) == (5.0, 1.0, 10)
    assert next(c for c in configs if c.method == "reinforce").num_samples == 64
    assert set(space.methods()) == set(COUPLINGS)
    # the paper's setup: R2C's model and optimiser, batch 96, 20 epochs, R2C's stopping rule
    assert {
        (c.preset, c.batch_size, c.epochs, c.lr, c.weight_decay, c.grad_clip, c.patience)
        for c in configs
    } == {("r2c", 96, 20, 2e-4, 1e-4, 1.0, 4)}
    direct = next(c for c in configs if c.method == "direct16")
    assert (direct.direct16_variant, direct.loss_ratio) == ("separate", 4.0)  # 0.2/0.8
    assert gumbel.anneal_per == "iteration"
    assert next(c for c in configs if c.method == "reinforce").estimator == "expectation"
    # one row per paper approach, named as the paper's tables name them
    from study.reports.paper import TABLES

    LABELS = {row.label for _, rows in TABLES.values() for row in rows}

    assert set(space.labels()) == LABELS and len(space.labels()) == 8


def test_define_by_run_draws_only_the_methods_own_parameters():
    space = load_space("joint")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        constants = space.suggest(trial)
        method = trial.params["method"]
        seen.add(method)
        assert constants == space.fixed
        own = {
            "gumbel": {
                "tau_start",
                "tau_end",
                "anneal_epochs",
                "anneal",
                "anneal_per",
                "straight_through",
            },
            "reinforce": {"num_samples", "estimator"},
            "direct16": {"direct16_variant"},
            "teacher": {"correct_answer_rate"},
        }
        assert set(trial.params) == {"method", "loss_ratio", "lr"} | own.get(method, set())
        config = space.config({**trial.params, **constants})
        assert config.method == method and config.epochs == space.fixed["epochs"]
        study.tell(trial, 0.0)
    assert seen == set(COUPLINGS)


def test_config_drops_parameters_of_other_methods():
    space = parse_space(
        "params:\n  method: {choice: [softmax, gumbel]}\n"
        "  tau_start: {uniform: [2, 3], methods: [gumbel]}",
        "s.yaml",
    )
    assert space.config({"method": "softmax", "tau_start": 2.5}).tau_start == 5.0  # default
    assert space.config({"method": "gumbel", "tau_start": 2.5}).tau_start == 2.5


def test_the_varied_settings_are_the_drawn_ones_or_a_grids_keys():
    drawn = load_space("default")
    assert drawn.varied() == [k for k in drawn.params if k != "method"]
    grid = load_space("paper").varied()
    assert {"correct_answer_rate", "loss_ratio", "num_samples"} <= set(grid)
    assert "method" not in grid and "label" not in grid
