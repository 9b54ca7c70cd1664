"""The backbone's own choices: R2C's initialisation, and one object in a training batch."""

from __future__ import annotations

import pytest
import torch

from vcrnet.model import PRESETS, R2CBackbone, preset


def test_r2c_init_is_the_r2c_presets_and_allennlps():
    assert PRESETS["r2c"].r2c_init and not PRESETS["small"].r2c_init
    torch.manual_seed(0)
    backbone = R2CBackbone(preset("tiny", r2c_init=True), text_dim=12)
    for lstm in (backbone.grounding, backbone.reasoning):
        h = lstm.hidden_size
        for name, param in lstm.named_parameters():
            if name.startswith("weight_hh"):  # [4h, h], orthonormal columns
                torch.testing.assert_close(param.T @ param, torch.eye(h), atol=1e-5, rtol=0)
            elif name.startswith("weight_ih"):  # xavier-uniform bound sqrt(6 / (fan_in + out))
                bound = (6 / sum(param.shape)) ** 0.5
                assert param.abs().max() <= bound and param.abs().max() > 0.5 * bound
            elif name.startswith("bias_hh"):  # gates i, f, g, o: the forget gate's bias 1
                assert param[h : 2 * h].eq(1).all() and param[:h].eq(0).all()
                assert param[2 * h :].eq(0).all()
            else:
                assert param.eq(0).all(), name
    for layer in (backbone.final_mlp[1], backbone.final_mlp[4]):
        bound = (6 / sum(layer.weight.shape)) ** 0.5
        assert layer.weight.abs().max() <= bound and layer.bias.eq(0).all()


def test_default_init_leaves_pytorchs():
    torch.manual_seed(0)
    backbone = R2CBackbone(preset("tiny"), text_dim=12)
    assert not backbone.grounding.bias_hh_l0.eq(0).all()


@pytest.mark.parametrize("objects", [1, 0])
def test_a_training_batch_of_fewer_than_two_objects_uses_the_running_statistics(objects):
    backbone = R2CBackbone(preset("tiny"), text_dim=12).train()
    norm = backbone.object_norm
    norm.running_mean.fill_(0.5)
    features = torch.rand(objects, 2048)  # the batch's objects, packed
    mask = torch.tensor([[True, False]]) if objects else torch.zeros(1, 2, dtype=torch.bool)
    index = torch.zeros(1, 2, dtype=torch.long)
    if not objects:  # no rows to point at: the slots read a zero row that is not an object
        features, index = torch.zeros(1, 2048), index
    out = backbone.encode_objects(features, index, torch.zeros(1, 2, dtype=torch.long), mask)
    assert out.reps.shape == (1, 2, 16) and torch.isfinite(out.reps).all()
    assert norm.running_mean.eq(0.5).all()  # left unchanged
