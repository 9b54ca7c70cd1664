"""The contract every coupling passes (parametrised over the registry), on a tiny model."""

from __future__ import annotations

import pytest
import torch

from vcrnet.config import TrainConfig
from vcrnet.couplings import COUPLINGS
from vcrnet.features import CachedVCRDataset, collate
from vcrnet.train import build, predict, training_loss

METHODS = sorted(COUPLINGS)


@pytest.fixture(scope="module")
def batch(synthetic_features):
    dataset = CachedVCRDataset(synthetic_features)
    return collate([dataset[i] for i in range(6)])


def tiny(method: str, **changes) -> TrainConfig:
    return TrainConfig(method=method, preset="tiny", num_samples=8, **changes)


@pytest.mark.parametrize("method", METHODS)
def test_finite_loss_and_gradients_reach_both_modules(method, batch):
    model, coupling = build(tiny(method, correct_answer_rate=0.5), text_dim=384)
    model.train()
    loss, parts = training_loss(model, coupling, batch, loss_ratio=1.0)
    assert torch.isfinite(loss) and all(torch.isfinite(torch.tensor(v)) for v in parts.values())
    loss.backward()
    for module in (model.answer_module, model.rationale_module):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("method", [m for m in METHODS if m != "teacher"])
def test_the_rationale_loss_reaches_the_answer_module(method, batch):
    """Joint couplings train the answer module through the rationale loss (the sampling path
    too); the teacher baseline does not."""
    model, coupling = build(tiny(method), text_dim=384)
    model.train()
    torch.manual_seed(0)
    answer_logits, _ = model.answer_logits(batch)
    loss = coupling.rationale_loss(answer_logits, model.rationale_scorer(batch), batch)
    loss.backward()
    answer_grad = sum(p.grad.abs().sum() for p in model.answer_module.parameters()
                      if p.grad is not None)
    assert answer_grad > 0


def test_teacher_rationale_loss_does_not_reach_the_answer_module(batch):
    model, coupling = build(tiny("teacher"), text_dim=384)
    answer_logits, _ = model.answer_logits(batch)
    coupling.rationale_loss(answer_logits, model.rationale_scorer(batch), batch).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0
               for p in model.answer_module.parameters())


def test_reparameterized_flags_match_the_gradient_paths():
    assert {m: COUPLINGS[m].reparameterized for m in METHODS} == {
        "direct16": True, "gumbel": True, "reinforce": False, "softmax": True, "teacher": False}


@pytest.mark.parametrize("method", METHODS)
def test_predictions_are_probabilities_and_deterministic(method, synthetic_features):
    dataset = CachedVCRDataset(synthetic_features)
    model, _ = build(tiny(method), text_dim=384)
    first, second = predict(model, dataset, batch_size=5), predict(model, dataset, batch_size=7)
    assert first.answer_probs.shape == (24, 4) and first.rationale_probs.shape == (24, 4, 4)
    torch.testing.assert_close(first.answer_probs.sum(-1), torch.ones(24))
    torch.testing.assert_close(first.rationale_probs.sum(-1), torch.ones(24, 4))
    torch.testing.assert_close(first.answer_probs, second.answer_probs, atol=1e-6, rtol=0)
    torch.testing.assert_close(first.rationale_probs, second.rationale_probs, atol=1e-6, rtol=0)


def test_mixed_with_one_hot_weights_equals_conditioning_on_that_answer(batch):
    model, _ = build(tiny("softmax"), text_dim=384)
    model.eval()
    scorer = model.rationale_scorer(batch)
    answers = torch.tensor([0, 1, 2, 3, 1, 0])
    one_hot = torch.nn.functional.one_hot(answers, 4).float()
    torch.testing.assert_close(scorer.mixed(one_hot), scorer.for_answer(answers), atol=1e-5,
                               rtol=1e-4)
    torch.testing.assert_close(scorer.all_pairs()[torch.arange(6), answers],
                               scorer.for_answer(answers), atol=1e-5, rtol=1e-4)


def test_gumbel_temperature_schedules():
    from vcrnet.couplings import CouplingConfig, GumbelCoupling

    linear = GumbelCoupling(CouplingConfig(tau_start=5, tau_end=1, anneal_epochs=10))
    expo = GumbelCoupling(CouplingConfig(tau_start=5, tau_end=1, anneal_epochs=4,
                                         anneal="exponential"))
    taus = []
    for epoch in (0, 5, 10, 15):
        linear.set_epoch(epoch)
        taus.append(linear.tau)
    assert taus == [5, 3, 1, 1]
    expo.set_epoch(2)
    assert expo.tau == pytest.approx(5 ** 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_overfits_a_tiny_batch(method, batch):
    torch.manual_seed(0)
    config = TrainConfig(method=method, preset="tiny", hidden=32, object_dim=32, mlp_dim=64,
                         num_samples=16, correct_answer_rate=1.0, tau_start=1.0, tau_end=0.5,
                         anneal_epochs=1)
    model, coupling = build(config, text_dim=384)
    coupling.set_epoch(5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        model.train()
        loss, _ = training_loss(model, coupling, batch, loss_ratio=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        answers = model.answer_logits(batch)[0].argmax(-1)
        pairs = model.rationale_scorer(batch).all_pairs()
        rationales = pairs[torch.arange(6), batch["answer_label"]].argmax(-1)
    assert (answers == batch["answer_label"]).all()
    assert (rationales == batch["rationale_label"]).all()
