"""The cache's readers: shards read as one array, int8 rows read back as float16, and a damaged
entry refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import SMALL_SETTINGS
from vcrnet.errors import InputError
from vcrnet.features import CachedVCRDataset, SplitFeatures, dev_split, extract_split
from vcrnet.features import cache as cache_module
from vcrnet.features.cache import (
    CHECKSUM_BYTES,
    MANIFEST,
    QuantizedRows,
    ShardedRows,
    checksum,
    quantize,
)
from vcrnet.features.stage import stage


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
    sharded = QuantizedRows(
        ShardedRows([codes[:10], codes[10:]]), ShardedRows([scales[:10], scales[10:]])
    )
    assert np.array_equal(np.take(sharded, np.array([12, 1]), axis=0), read[np.array([12, 1])])


def _private_copy(features: SplitFeatures, cache: Path) -> SplitFeatures:
    """A copy of an entry pair in ``cache``, free to damage."""
    return SplitFeatures(
        *(Path(shutil.copytree(e, cache / e.name)) for e in (features.text, features.objects))
    )


def _damaged(entry: Path) -> str:
    return (
        f"a damaged feature cache entry: remove {entry} and run `vcr-study data features` "
        f"again with the same options"
    )


def _cut(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_an_array_cut_short_is_one_line_naming_entry_file_and_sizes(synthetic_features, tmp_path):
    copy = _private_copy(synthetic_features, tmp_path)
    array = copy.objects / "features-00000.npy"
    size = array.stat().st_size
    _cut(array, size // 2)
    with pytest.raises(InputError) as err:
        CachedVCRDataset(copy)
    assert str(err.value) == (
        f"{array}: {size // 2:,} bytes, the manifest says {size:,} ({_damaged(copy.objects)})"
    )


def test_bytes_changed_in_the_first_mib_fail_the_checksum(synthetic_features, tmp_path):
    copy = _private_copy(synthetic_features, tmp_path)
    array = copy.text / "features-00000.npy"
    want = json.loads((copy.text / MANIFEST).read_text())["checksums"][array.name]
    _flip(array, 1000)
    with pytest.raises(InputError) as err:
        CachedVCRDataset(copy)
    assert str(err.value) == (
        f"{array}: checksum {checksum(array)}, the manifest says {want} "
        f"(its first or last MiB changed) ({_damaged(copy.text)})"
    )
    assert "\n" not in str(err.value)


def test_a_manifest_from_before_checksums_is_checked_by_size(synthetic_features, tmp_path):
    copy = _private_copy(synthetic_features, tmp_path)
    manifest = json.loads((copy.text / MANIFEST).read_text())
    del manifest["checksum"], manifest["checksums"]
    (copy.text / MANIFEST).write_text(json.dumps(manifest))
    _flip(copy.text / "features-00000.npy", 1000)  # unseen without checksums
    assert len(CachedVCRDataset(copy)) == 24
    _cut(copy.text / "tags.npy", 100)  # checked in a new copy: this one's check is remembered
    with pytest.raises(InputError, match=r"tags\.npy: 100 bytes, the manifest says 19,960"):
        CachedVCRDataset(_private_copy(copy, tmp_path / "again"))


def test_the_checksum_reads_the_first_and_last_mib_and_the_size(tmp_path):
    """Under 2 MiB every byte counts; beyond, a byte between the two ends does not."""
    path = tmp_path / "a.npy"
    for size in (0, 10, CHECKSUM_BYTES + 10, 3 * CHECKSUM_BYTES):
        path.write_bytes(bytes(size))
        before = checksum(path)
        for offset in {0, size // 2, size - 1} if size else ():
            _flip(path, offset)
            changed = checksum(path) != before
            _flip(path, offset)
            assert changed == (size < 2 * CHECKSUM_BYTES or offset != size // 2), (size, offset)
    path.write_bytes(bytes(3 * CHECKSUM_BYTES + 1))  # zeros either way: only the size differs
    assert checksum(path) != before


def test_an_entry_is_checked_once_per_process(synthetic_features, tmp_path, monkeypatch):
    copy = _private_copy(synthetic_features, tmp_path)
    calls = []
    real = cache_module.checksum
    monkeypatch.setattr(cache_module, "checksum", lambda path: calls.append(path) or real(path))
    data = CachedVCRDataset(copy)
    rest, dev = dev_split(data, 0.25, seed=0)
    for dataset in (data, rest, dev, CachedVCRDataset(copy)):
        assert dataset[0]["objects"].shape[1] == 2048  # the arrays opened (``open_rows``)
    listed = sum(
        len(json.loads((e / MANIFEST).read_text())["files"]) for e in (copy.text, copy.objects)
    )
    assert len(calls) == len(set(calls)) == listed


def test_a_node_copy_is_checked_as_readers_check_an_entry(synthetic_features, tmp_path):
    entry = _private_copy(synthetic_features, tmp_path / "shared").text
    lines = []
    local = stage(entry, tmp_path / "local", echo=lines.append)
    _flip(local / "features-00000.npy", 1000)
    assert stage(entry, tmp_path / "local", echo=lines.append) == local
    assert "features-00000.npy: checksum" in lines[1] and lines[1].endswith("copying again")
    assert cache_module.entry_problem(local) is None  # copied again, whole
    damaged = _private_copy(synthetic_features, tmp_path / "shared2").text  # a new entry: the
    _flip(damaged / "features-00000.npy", 1000)  # first one's check is remembered by the process
    with pytest.raises(InputError) as err:  # (and a node with a whole copy would reuse it)
        stage(damaged, tmp_path / "local2", echo=lines.append)
    assert str(err.value).startswith(f"{damaged / 'features-00000.npy'}: checksum ")
    assert str(err.value).endswith(f"({_damaged(damaged)})")


def test_train_on_a_damaged_entry_exits_2_with_one_line(
    synthetic_dir, synthetic_features, tmp_path, cli
):
    cache = tmp_path / "cache"
    copy = _private_copy(synthetic_features, cache)
    with pytest.warns(UserWarning, match="ResNet"):
        extract_split(synthetic_dir, "val", cache, SMALL_SETTINGS, progress=False)
    array = copy.objects / "features-00000.npy"
    size = array.stat().st_size
    _cut(array, 1000)
    code, out, err = cli(
        "train",
        "--set",
        "preset=tiny",
        "--epochs",
        1,
        "--data",
        synthetic_dir,
        "--cache",
        cache,
        "--out",
        tmp_path / "run",
    )
    assert code == 2, (out, err)
    assert err.splitlines() == [
        f"vcr-study: error: {array}: 1,000 bytes, the manifest says "
        f"{size:,} ({_damaged(copy.objects)})"
    ]
    assert "Traceback" not in out + err


# the extraction code's digest (cache.extraction_digest) at each cache version: a change to that
# code must come with a new CACHE_VERSION (and its digest here), or old entries would be reused
EXTRACTION_DIGESTS = {
    4: "2bd363b315ae65bec21a39d0ab8256fa22b0771f855f34286ecfdfe2ca07c1c9",
}


def test_a_change_to_the_extraction_code_needs_a_new_cache_version():
    assert cache_module.extraction_digest() == EXTRACTION_DIGESTS[cache_module.CACHE_VERSION], (
        "the extraction code (vcrnet.features.cache.EXTRACTION_SOURCES) changed: raise "
        "CACHE_VERSION and record the new digest in EXTRACTION_DIGESTS"
    )


def test_the_extraction_digest_reads_code_not_comments():
    source = '"""Doc."""\n\nX = 1  # a comment\n\n\ndef f():\n    """Doc."""\n    return X\n'
    digest = cache_module.sources_digest({"m.py": source})
    reworded = source.replace("Doc.", "Other words.").replace("# a comment", "# another")
    assert cache_module.sources_digest({"m.py": reworded}) == digest
    assert cache_module.sources_digest({"m.py": source.replace("X = 1", "X = 2")}) != digest
    assert cache_module.sources_digest({"m.py": source + "Y = 0\n"}) != digest
    versioned = source + "CACHE_VERSION = 9\n"  # the version's own line is not code
    assert cache_module.sources_digest({"m.py": versioned}) == digest
    assert cache_module.sources_digest({"n.py": source}) != digest  # nor is a file's name lost
