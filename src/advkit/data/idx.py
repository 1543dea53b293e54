"""A reader for IDX files, the format of the original MNIST and Fashion-MNIST distributions.

Format (LeCun, Cortes and Burges, "The MNIST database of handwritten digits", 1998; described at
yann.lecun.com/exdb/mnist): a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
dimension sizes as big-endian unsigned 32-bit integers, then the values in C order, big-endian.
Files are often gzip-compressed; the reader detects that from the gzip magic bytes, not the name.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from advkit.errors import DataFormatError

# dtype code (third magic byte) -> big-endian numpy dtype
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file into a native-endian array."""
    if len(data) < 4:
        raise DataFormatError(
            f"{source}: not an IDX file: {len(data)} bytes, shorter than the 4-byte magic number"
        )
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 or zero1:
        raise DataFormatError(
            f"{source}: not an IDX file: magic number starts with {data[:2].hex()}, expected 0000"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataFormatError(f"{source}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise DataFormatError(f"{source}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(
            f"{source}: truncated IDX header: {ndim} dimensions need {header} bytes, "
            f"the file has {len(data)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize
    payload = len(data) - header
    if payload < expected:
        raise DataFormatError(
            f"{source}: truncated IDX file: shape {dims} of {dtype.name} needs {expected} data "
            f"bytes, found {payload}; the file is incomplete, download or reinstall it"
        )
    if payload > expected:
        raise DataFormatError(
            f"{source}: IDX file has {payload - expected} bytes after the data declared by its "
            f"header (shape {dims}); the file is corrupt"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header)
    return array.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed) into a native-endian numpy array.

    Raises ``DataFormatError`` on a corrupt or truncated file and ``FileNotFoundError`` when the
    file does not exist.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataFormatError(
                f"{path}: corrupt or truncated gzip stream ({exc}); download or reinstall it"
            ) from exc
    return parse_idx(raw, source=str(path))
