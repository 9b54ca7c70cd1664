"""The input path: packed batches padded on the device are ``collate``'s batches bit for bit;
length buckets; the model's host lengths; predictions in the dataset's order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vcrnet.config import TrainConfig
from vcrnet.errors import InputError
from vcrnet.features import CachedVCRDataset, collate
from vcrnet.features.batches import (
    BUCKET_NOISE,
    Batches,
    composition,
    epoch_order,
    gather,
    item_sizes,
    sorted_order,
    unpad,
)
from vcrnet.features.dataset import HOST_KEYS
from vcrnet.train import build, predict, training_loss


@pytest.fixture(scope="module")
def dataset(synthetic_features):
    return CachedVCRDataset(synthetic_features)


def assert_same_batch(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key


@pytest.mark.parametrize("prefetch", [0, 2])
def test_the_packed_path_makes_collates_batches(dataset, prefetch):
    order = epoch_order(item_sizes(dataset), 5, seed=7, bucket_batches=2)
    got = list(Batches(dataset, order, "cpu", prefetch=prefetch))
    assert len(got) == len(order) == 5  # 24 items, batches of 5
    for batch, positions in zip(got, order):
        assert_same_batch(batch, collate([dataset[int(i)] for i in positions]))


def test_int8_rows_are_widened_on_the_device_as_the_host_would(synthetic_dir, tmp_path):
    """int8 text travels as codes and scales; ``unpad`` makes collate's float16-rounded rows."""
    from dataclasses import replace

    from tests.helpers import SMALL_SETTINGS
    from vcrnet.features import extract_splits

    found = extract_splits(
        synthetic_dir,
        ("val",),
        tmp_path,
        replace(SMALL_SETTINGS, storage="int8"),
        progress=False,
        shard_items=4,
        shard_images=2,
    )["val"]
    quantized = CachedVCRDataset(found)
    packed = gather(quantized, np.arange(len(quantized)))
    assert packed["text"].dtype == torch.int8 and packed["text_scales"].dtype == torch.float32
    for positions in sorted_order(item_sizes(quantized), 4):
        assert_same_batch(
            unpad(gather(quantized, positions)), collate([quantized[int(i)] for i in positions])
        )


def test_a_subset_serves_its_own_items(dataset):
    view = dataset.subset(np.array([20, 3, 11]))
    assert_same_batch(unpad(gather(view, np.array([2, 0]))), collate([view[2], view[0]]))
    assert torch.equal(
        unpad(gather(view, np.array([1])))["objects"], collate([dataset[3]])["objects"]
    )


def test_epoch_order_is_seeded_and_serves_every_item_once():
    sizes = np.random.default_rng(0).integers(50, 500, size=103)
    for buckets in (0, 1, 4):
        order = epoch_order(sizes, 8, seed=3, bucket_batches=buckets)
        assert len(order) == 13  # ceil(103 / 8)
        assert sorted(np.concatenate(order).tolist()) == list(range(103))
        again = epoch_order(sizes, 8, seed=3, bucket_batches=buckets)
        assert all(np.array_equal(a, b) for a, b in zip(order, again))
    other = epoch_order(sizes, 8, seed=4, bucket_batches=4)
    assert not all(np.array_equal(a, b) for a, b in zip(order, other))


def padded(order: list[np.ndarray], sizes: np.ndarray) -> int:
    """Rows a batch of items padded to its largest would hold (a proxy of the model's cost)."""
    return sum(len(b) * sizes[b].max() for b in order)


def test_buckets_cut_padding_and_still_mix_sizes():
    sizes = np.random.default_rng(1).integers(50, 500, size=960)
    plain = epoch_order(sizes, 32, seed=0, bucket_batches=0)
    bucketed = epoch_order(sizes, 32, seed=0, bucket_batches=10)
    assert padded(bucketed, sizes) < 0.8 * padded(plain, sizes)
    # batches of a bucket come in shuffled order: the epoch does not go from short to long
    means = [sizes[b].mean() for b in bucketed]
    assert not (np.all(np.diff(means[:10]) >= 0) or np.all(np.diff(means[:10]) <= 0))


def test_noisy_buckets_mix_what_length_would_group_and_draw_new_neighbours():
    """Where an item's size tells its kind (as on the built-in data: the question types differ
    by a few words), buckets without noise batch one kind together and the same neighbours again
    every epoch; the noisy ones (``BUCKET_NOISE``) come close to a plain shuffle on both and
    still save padding (docs/fidelity.md R10, benchmarks/batch_composition.py)."""
    rng = np.random.default_rng(0)
    kinds = rng.integers(4, size=1600)
    sizes = 400 + 20 * kinds + rng.integers(0, 15, size=1600)

    def stats(buckets: int, noise: float) -> dict:
        first, second = (epoch_order(sizes, 16, e, buckets, noise) for e in (0, 1))
        return {**composition(first, second, kinds), "padded": padded(first, sizes)}

    plain, exact, noisy = stats(0, 0.0), stats(50, 0.0), stats(50, BUCKET_NOISE)
    assert plain["single_group"] < 0.01 and plain["together_again"] < 0.02
    assert exact["single_group"] > 0.5 and exact["together_again"] > 5 * plain["together_again"]
    assert noisy["single_group"] < 0.1 and noisy["together_again"] < 2 * plain["together_again"]
    assert exact["padded"] < noisy["padded"] < plain["padded"]


def test_composition_counts_one_kind_batches_and_pairs_met_again():
    kinds = np.array([0, 0, 1, 1, 1, 0])
    epoch = [np.array([0, 1]), np.array([2, 3, 4]), np.array([5])]  # the 1-item batch: no pairs
    following = [np.array([0, 1, 2]), np.array([3, 4, 5])]
    got = composition(epoch, following, kinds)
    assert got == {"single_group": 1.0, "together_again": 2 / 4}  # (0,1) and (3,4) of 4 pairs
    assert composition(epoch, following, np.array([0, 1, 1, 1, 1, 0]))["single_group"] == 0.5


def test_evaluation_batches_sort_by_size(dataset):
    sizes = item_sizes(dataset)
    order = sorted_order(sizes, 4)
    assert sorted(np.concatenate(order).tolist()) == list(range(len(dataset)))
    assert np.all(np.diff(sizes[np.concatenate(order)]) >= 0)


@pytest.mark.parametrize("method", ["softmax", "teacher", "reinforce"])
def test_host_lengths_change_nothing(dataset, method):
    """The model reads the same numbers with the lengths on the host and without them (then
    it counts the masks)."""
    batch = collate([dataset[i] for i in range(6)])
    without = {k: v for k, v in batch.items() if k not in HOST_KEYS}
    model, coupling = build(
        TrainConfig(
            method=method, preset="tiny", correct_answer_rate=1.0, num_samples=4, estimator="exact"
        ),
        text_dim=384,
    )
    model.eval()
    with torch.no_grad():
        a = model.answer_logits(batch), model.rationale_scorer(batch).all_pairs()
        b = model.answer_logits(without), model.rationale_scorer(without).all_pairs()
        for one, other in zip(a, b):
            torch.testing.assert_close(one, other, rtol=0, atol=1e-6)
        torch.manual_seed(0)
        loss, _ = training_loss(model, coupling, batch, 1.0)
        torch.manual_seed(0)
        loss_without, _ = training_loss(model, coupling, without, 1.0)
    torch.testing.assert_close(loss, loss_without, rtol=0, atol=1e-6)


def test_predictions_come_back_in_the_datasets_order(dataset):
    """``predict`` batches by length; its rows are the dataset's items in order all the same."""
    model, _ = build(TrainConfig(preset="tiny"), text_dim=384)
    model.eval()
    p = predict(model, dataset, batch_size=4)
    with torch.no_grad():
        for i in (0, 5, 17, 23):
            one = collate([dataset[i]])
            torch.testing.assert_close(
                p.answer_logits[i], model.answer_logits(one)[0], rtol=1e-5, atol=1e-5
            )
            torch.testing.assert_close(
                p.pair_logits[i], model.rationale_scorer(one).all_pairs()[0], rtol=1e-5, atol=1e-5
            )
    assert torch.equal(p.answer_labels, torch.from_numpy(dataset.labels[:, 0]))


class UnequalRationales(CachedVCRDataset):
    """Rationale 0 one word longer beside answer 1 than beside the others."""

    @property
    def arrays(self):
        a = dict(super().arrays)
        index = np.array(a["index"])
        index[:, 4 + 4 * 1 + 0, 2] += 1
        a["index"] = index
        return a


def test_a_rationale_whose_length_depends_on_the_answer_is_refused(synthetic_features):
    """The model takes a rationale's length from answer 0's row (``RationaleScorer``)."""
    with pytest.raises(InputError, match="word count differs between the answers"):
        gather(UnequalRationales(synthetic_features), np.array([0, 1]))
