"""The contract every coupling passes (parametrised over the registry and every estimator and
variant), on a tiny model; the estimators and schedules pinned to hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from vcrnet.config import TrainConfig
from vcrnet.couplings import COUPLINGS, CouplingConfig, GumbelCoupling
from vcrnet.couplings.base import ANSWER_GRADIENTS
from vcrnet.couplings.reinforce import exact_loss, expectation_loss, rloo_loss
from vcrnet.errors import InputError
from vcrnet.features import CachedVCRDataset, collate
from vcrnet.train import build, evaluate, predict, training_loss

METHODS = sorted(COUPLINGS)
# every coupling, and every estimator and variant of one
VARIANTS = [
    ("softmax", {}),
    ("gumbel", {}),
    ("gumbel", {"straight_through": True}),
    ("reinforce", {"estimator": "expectation"}),
    ("reinforce", {"estimator": "exact"}),
    ("reinforce", {"estimator": "score"}),
    ("direct16", {"direct16_variant": "separate"}),
    ("direct16", {"direct16_variant": "joint"}),
    ("teacher", {}),
]
VARIANT_IDS = ["-".join([m, *map(str, c.values())]) for m, c in VARIANTS]


@pytest.fixture(scope="module")
def batch(synthetic_features):
    dataset = CachedVCRDataset(synthetic_features)
    return collate([dataset[i] for i in range(6)])


def tiny(method: str, **changes) -> TrainConfig:
    return TrainConfig(**{"method": method, "preset": "tiny", "num_samples": 8, **changes})


def test_the_variants_cover_the_registry():
    assert {m for m, _ in VARIANTS} == set(COUPLINGS)


@pytest.mark.parametrize("method,changes", VARIANTS, ids=VARIANT_IDS)
def test_finite_loss_and_gradients_reach_both_modules(method, changes, batch):
    model, coupling = build(tiny(method, correct_answer_rate=0.5, **changes), text_dim=384)
    model.train()
    loss, parts = training_loss(model, coupling, batch, loss_ratio=1.0)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in parts.values())
    assert set(parts) == {"answer_loss", "coupling_loss", "joint_nll"}
    loss.backward()
    for module in (model.answer_module, model.rationale_module):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("method,changes", VARIANTS, ids=VARIANT_IDS)
def test_the_coupling_loss_reaches_the_answer_logits_as_declared(method, changes, batch):
    """The rationale loss alone, differentiated w.r.t. the answer logits: non-zero through a
    pathwise or estimator coupling, none for the teacher baselines and the separate 16-way (a
    coupling that detached the answer logits would fail here)."""
    model, coupling = build(tiny(method, **changes), text_dim=384)
    assert coupling.answer_gradient in ANSWER_GRADIENTS
    model.train()
    torch.manual_seed(0)
    answer_logits = model.answer_logits(batch).detach().requires_grad_()  # [B, 4], a leaf
    loss = coupling.rationale_loss(answer_logits, model.rationale_scorer(batch), batch)
    (grad,) = torch.autograd.grad(loss, answer_logits, allow_unused=True, retain_graph=True)
    reaches = grad is not None and grad.abs().sum() > 0
    assert reaches == (coupling.answer_gradient != "none")
    loss.backward()
    assert (
        sum(p.grad.abs().sum() for p in model.rationale_module.parameters() if p.grad is not None)
        > 0
    )


def test_the_declared_answer_gradients():
    declared = {
        "-".join([m, *map(str, c.values())]): build(tiny(m, **c), 384)[1].answer_gradient
        for m, c in VARIANTS
    }
    assert declared == {
        "softmax": "pathwise",
        "gumbel": "pathwise",
        "gumbel-True": "pathwise",
        "reinforce-expectation": "estimator",
        "reinforce-exact": "estimator",
        "reinforce-score": "estimator",
        "direct16-separate": "none",
        "direct16-joint": "pathwise",
        "teacher": "none",
    }


def test_predictions_are_probabilities_and_deterministic(synthetic_features):
    dataset = CachedVCRDataset(synthetic_features)
    model, _ = build(tiny("softmax"), text_dim=384)
    first, second = predict(model, dataset, batch_size=5), predict(model, dataset, batch_size=7)
    assert first.answer_probs.shape == (24, 4) and first.rationale_probs.shape == (24, 4, 4)
    assert first.mixture_probs.shape == (24, 4)
    torch.testing.assert_close(first.answer_probs.sum(-1), torch.ones(24))
    torch.testing.assert_close(first.rationale_probs.sum(-1), torch.ones(24, 4))
    torch.testing.assert_close(first.mixture_probs.sum(-1), torch.ones(24))
    for name in ("answer_logits", "pair_logits", "mixture_logits"):
        torch.testing.assert_close(getattr(first, name), getattr(second, name), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method,changes", VARIANTS, ids=VARIANT_IDS)
def test_evaluation_gives_every_metric_and_is_deterministic(method, changes, synthetic_features):
    dataset = CachedVCRDataset(synthetic_features)
    model, coupling = build(tiny(method, **changes), text_dim=384)
    first = evaluate(model, dataset, batch_size=5, coupling=coupling)
    assert set(first) == {
        "q2a",
        "qa2r",
        "qa2r_pred",
        "q2ar",
        "qa2r_mixture",
        "q2ar_mixture",
        "qa2r_joint16",
        "q2ar_joint16",
        "q2a_and_joint16",
        "joint_nll",
    }
    assert all(0 <= v <= 1 for k, v in first.items() if k != "joint_nll")
    assert math.isfinite(first["joint_nll"]) and first["joint_nll"] > 0
    assert evaluate(model, dataset, batch_size=7, coupling=coupling) == pytest.approx(first)


def test_mixed_with_one_hot_weights_equals_conditioning_on_that_answer(batch):
    model, _ = build(tiny("softmax"), text_dim=384)
    model.eval()
    scorer = model.rationale_scorer(batch)
    answers = torch.tensor([0, 1, 2, 3, 1, 0])
    fresh = scorer.for_answer(answers)  # before the 16 pairs are made: its own groundings
    one_hot = torch.nn.functional.one_hot(answers, 4).float()
    torch.testing.assert_close(scorer.mixed(one_hot), fresh, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        scorer.all_pairs()[torch.arange(6), answers], fresh, atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(scorer.for_answer(answers), fresh, atol=1e-5, rtol=1e-4)  # picked


# the temperature schedule, per iteration and per epoch


def _tau(coupling: GumbelCoupling, epoch: int, step: int = 0, steps: int = 1) -> float:
    coupling.set_position(epoch, step, steps)
    return coupling.tau


def test_gumbel_reaches_tau_end_after_exactly_anneal_epochs_per_iteration():
    linear = GumbelCoupling(CouplingConfig(tau_start=5, tau_end=1, anneal_epochs=10))
    steps = 7
    assert _tau(linear, 0, 0, steps) == 5
    assert _tau(linear, 9, steps - 1, steps) == pytest.approx(1)  # the last step of epoch 10
    assert [_tau(linear, e, s, steps) for e, s in ((10, 0), (10, 3), (25, 6))] == [1, 1, 1]
    taus = [_tau(linear, e, s, steps) for e in range(10) for s in range(steps)]
    assert all(a > b for a, b in zip(taus, taus[1:]))  # every step moves
    assert taus[1] == pytest.approx(5 - 4 / (10 * steps - 1))  # linear in the step


def test_gumbel_per_epoch_and_exponential_schedules():
    per_epoch = GumbelCoupling(
        CouplingConfig(tau_start=5, tau_end=1, anneal_epochs=5, anneal_per="epoch")
    )
    assert [_tau(per_epoch, e, 3, 7) for e in range(7)] == [5, 4, 3, 2, 1, 1, 1]
    expo = GumbelCoupling(
        CouplingConfig(
            tau_start=8, tau_end=2, anneal_epochs=3, anneal="exponential", anneal_per="epoch"
        )
    )
    assert [_tau(expo, e) for e in range(4)] == pytest.approx([8, 4, 2, 2])
    held = GumbelCoupling(CouplingConfig(tau_start=5, tau_end=0.5, anneal_epochs=0))
    assert _tau(held, 0, 0, 9) == 0.5
    assert held.state() == {"tau": 0.5}


# the estimators and the 16-way, against values computed by hand

P = [0.5, 0.25, 0.125, 0.125]  # p(a)
C = [1.0, 3.0, 5.0, 9.0]  # rationale 0's odds given answer a: p(r=0 | a) = c / (c + 3)
L = [math.log(4), math.log(2), math.log(8 / 5), math.log(4 / 3)]  # l(a) = -log p(r=0 | a)


class FixedScorer:
    """A RationaleScorer stand-in with fixed pair logits ``[1, 4, 4]``."""

    def __init__(self, pair_logits: torch.Tensor):
        self.pairs = pair_logits

    def all_pairs(self) -> torch.Tensor:
        return self.pairs


def _hand_example() -> tuple[torch.Tensor, FixedScorer, dict]:
    answer_logits = torch.tensor([P]).log().requires_grad_()
    pairs = torch.zeros(1, 4, 4)
    pairs[0, :, 0] = torch.tensor(C).log()
    return (
        answer_logits,
        FixedScorer(pairs),
        {"answer_label": torch.tensor([1]), "rationale_label": torch.tensor([0])},
    )


def test_exact_estimator_is_equation_4():
    answer_logits, scorer, batch = _hand_example()
    coupling = COUPLINGS["reinforce"](CouplingConfig(estimator="exact"))
    loss = coupling.rationale_loss(answer_logits, scorer, batch)
    assert loss.item() == pytest.approx(sum(p * lo for p, lo in zip(P, L)), rel=1e-6)
    (grad,) = torch.autograd.grad(loss, answer_logits)
    mean = sum(p * lo for p, lo in zip(P, L))  # d/dz_a sum p l = p_a (l_a - E[l])
    torch.testing.assert_close(grad[0], torch.tensor([p * (lo - mean) for p, lo in zip(P, L)]))


def test_expectation_estimator_is_the_seed_surrogate():
    losses = torch.tensor([L])
    samples = torch.tensor([[0, 0, 1, 3]])
    log_p = torch.tensor([P]).log()
    expected = (2 * L[0] * P[0] + L[1] * P[1] + L[3] * P[3]) / 4
    assert expectation_loss(losses, log_p, samples).item() == pytest.approx(expected, rel=1e-6)
    many = torch.multinomial(
        torch.tensor(P), 400_000, replacement=True, generator=torch.Generator().manual_seed(0)
    ).unsqueeze(0)
    estimate = expectation_loss(losses, log_p, many).item()  # sum p^2 l, not eq. 4's sum p l
    assert estimate == pytest.approx(sum(p * p * lo for p, lo in zip(P, L)), rel=5e-3)
    assert exact_loss(losses, log_p).item() > 1.5 * estimate


def test_rloo_gradient_matches_the_hand_computed_value():
    """Samples (0, 0, 1), losses l0 = 2, l1 = 0.5: leave-one-out baselines (l0+l1)/2, (l0+l1)/2,
    l0; advantages 0.75, 0.75, -1.5; the advantages sum to 0, so the gradient w.r.t. the logits
    is (1/3) * (1.5, -1.5, 0, 0) and the value the mean sampled loss, 1.5."""
    losses = torch.tensor([[2.0, 0.5, 1.0, 3.0]])
    answer_logits = torch.tensor([P]).log().requires_grad_()
    loss = rloo_loss(losses, torch.log_softmax(answer_logits, -1), torch.tensor([[0, 0, 1]]))
    assert loss.item() == pytest.approx(1.5)
    (grad,) = torch.autograd.grad(loss, answer_logits)
    torch.testing.assert_close(grad, torch.tensor([[0.5, -0.5, 0.0, 0.0]]))


@pytest.mark.parametrize("make", [CouplingConfig, TrainConfig])
def test_score_estimator_needs_two_samples(make):
    with pytest.raises(InputError, match="num_samples: must be at least 2 with estimator score"):
        make(estimator="score", num_samples=1)
    assert make(estimator="expectation", num_samples=1).num_samples == 1


@pytest.mark.parametrize(
    "variant,expected",
    [
        # 16-way target 4 * 1 + 0 = 4; the separate scores are the pair logits alone
        ("separate", math.log(sum(C) + 12) - math.log(C[1])),
        # joint: log p(a) added to each answer's row, a normaliser of sum_a p(a) (c_a + 3)
        ("joint", math.log(sum(p * (c + 3) for p, c in zip(P, C))) - math.log(P[1] * C[1])),
    ],
)
def test_direct16_variants_by_hand(variant, expected):
    answer_logits, scorer, batch = _hand_example()
    coupling = COUPLINGS["direct16"](CouplingConfig(direct16_variant=variant))
    assert coupling.rationale_loss(answer_logits, scorer, batch).item() == pytest.approx(
        expected, rel=1e-6
    )


@pytest.mark.parametrize("method", METHODS)
def test_each_method_overfits_a_tiny_batch(method, batch):
    torch.manual_seed(0)
    config = TrainConfig(
        method=method,
        preset="tiny",
        hidden=32,
        object_dim=32,
        mlp_dim=64,
        num_samples=16,
        correct_answer_rate=1.0,
        tau_start=1.0,
        tau_end=0.5,
        anneal_epochs=1,
    )
    model, coupling = build(config, text_dim=384)
    coupling.set_position(5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        model.train()
        loss, _ = training_loss(model, coupling, batch, loss_ratio=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        answers = model.answer_logits(batch).argmax(-1)
        pairs = model.rationale_scorer(batch).all_pairs()
        rationales = pairs[torch.arange(6), batch["answer_label"]].argmax(-1)
    assert (answers == batch["answer_label"]).all()
    assert (rationales == batch["rationale_label"]).all()
