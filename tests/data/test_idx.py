"""The IDX reader: round trips against hand-built files, and clear errors on corrupt files."""

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advkit.data import DataFormatError, read_idx
from advkit.data.idx import parse_idx
from advkit.errors import AdvkitError

CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """Encode by the format description, independently of the reader."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=CODES[code]).tobytes()


@settings(max_examples=30, deadline=None)
@given(code=st.sampled_from(sorted(CODES)),
       shape=st.lists(st.integers(0, 5), min_size=1, max_size=4), seed=st.integers(0, 2**31))
def test_round_trip_every_dtype(code, shape, seed):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(CODES[code])
    if dtype.kind == "f":
        a = rng.normal(size=shape).astype(dtype.newbyteorder("="))
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(
            dtype.newbyteorder("="))
    out = parse_idx(idx_bytes(a, code))
    assert out.shape == a.shape
    assert out.dtype == a.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, a)


def test_reads_plain_and_gzip_files(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(a, 0x08)
    (tmp_path / "a.idx").write_bytes(raw)
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(raw))
    # gzip is detected from its magic bytes, not the name
    (tmp_path / "b.bin").write_bytes(gzip.compress(raw))
    for name in ("a.idx", "a.idx.gz", "b.bin"):
        out = read_idx(tmp_path / name)
        np.testing.assert_array_equal(out, a)
        assert out.flags.writeable


def test_big_endian_values_decoded():
    a = np.array([1, 256, -2, 70000], dtype=np.int32)
    raw = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 4) + struct.pack(">4i", *a.tolist())
    np.testing.assert_array_equal(parse_idx(raw), a)


GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08)


@pytest.mark.parametrize(
    "data, words",
    [
        (GOOD[:-1], "truncated"),  # one byte short
        (GOOD[:30], "truncated"),
        (GOOD[:10], "truncated IDX header"),
        (GOOD[:3], "shorter than the 4-byte magic"),
        (GOOD + b"\x00", "after the data"),
        (b"\x01\x00" + GOOD[2:], "not an IDX file"),
        (GOOD[:2] + b"\x07" + GOOD[3:], "unknown IDX dtype code 0x07"),
        (GOOD[:3] + b"\x00", "0 dimensions"),
    ],
    ids=["short-by-one", "truncated-data", "truncated-header", "no-magic", "trailing",
         "bad-magic", "bad-dtype", "zero-dims"],
)
def test_corrupt_files_are_refused(tmp_path, data, words):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataFormatError, match=words) as err:
        read_idx(path)
    assert isinstance(err.value, AdvkitError)
    assert str(path) in str(err.value)


def test_truncated_and_corrupt_gzip_are_refused(tmp_path):
    packed = gzip.compress(idx_bytes(np.arange(4000, dtype=np.uint8).reshape(40, 100), 0x08))
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataFormatError, match="gzip"):
        read_idx(tmp_path / "cut.gz")
    flipped = bytearray(packed)
    flipped[-6] ^= 0xFF  # inside the CRC-32 / size trailer
    (tmp_path / "crc.gz").write_bytes(bytes(flipped))
    with pytest.raises(DataFormatError, match="gzip"):
        read_idx(tmp_path / "crc.gz")


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")
