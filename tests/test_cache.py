"""The cache's readers: shards read as one array, int8 rows read back as float16."""

from __future__ import annotations

import numpy as np
import pytest

from vcrnet.features.cache import QuantizedRows, ShardedRows, quantize


@pytest.fixture
def rows() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(23, 5)).astype(np.float16)


def test_shards_read_as_the_whole_array(rows):
    sharded = ShardedRows([rows[:7], rows[7:8], rows[8:]])
    assert len(sharded) == 23 and sharded.shape == (23, 5) and sharded.dtype == np.float16
    for start, stop in ((0, 7), (2, 5), (6, 9), (7, 8), (0, 23), (20, 23), (5, 5)):
        assert np.array_equal(sharded[start:stop], rows[start:stop]), (start, stop)
    picked = np.array([22, 0, 7, 7, 3, 8])
    out = np.empty((6, 5), dtype=np.float16)
    np.take(sharded, picked, axis=0, out=out, mode="clip")  # what the batch gather calls
    assert np.array_equal(out, rows[picked]) and np.array_equal(sharded[picked], rows[picked])


def test_int8_rows_come_back_within_half_a_step(rows):
    rows[4] = 0  # a zero row: scale 0, no division by it
    codes, scales = quantize(rows)
    assert codes.dtype == np.int8 and scales.dtype == np.float32
    assert np.abs(codes).max(axis=1)[rows.any(axis=1)].min() == 127  # each row's full range
    read = QuantizedRows(codes, scales)
    error = np.abs(read[0:23].astype(np.float32) - rows.astype(np.float32))
    assert (error <= scales[:, None] / 2 + 2e-3).all()
    assert not read[4:5].any()
    sharded = QuantizedRows(ShardedRows([codes[:10], codes[10:]]),
                            ShardedRows([scales[:10], scales[10:]]))
    assert np.array_equal(np.take(sharded, np.array([12, 1]), axis=0), read[np.array([12, 1])])
