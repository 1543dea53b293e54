"""A size limit on ``.npz`` archives, checked before any member is decompressed.

A zip member can expand thousands of times (a few KiB of DEFLATE data become gigabytes of zeros),
and a ``.npy`` header can declare an array far larger than its data, which numpy allocates before
reading. ``check_npz`` reads only the zip directory and each member's ``.npy`` header and refuses,
with a ``DataFormatError`` naming the member, the size and the limit:

- a member whose uncompressed size (``file_size`` in the zip directory, which bounds what Python's
  ``zipfile`` decompresses) exceeds the limit, or members whose sizes add up beyond it;
- a ``.npy`` header declaring a negative dimension or an array (shape × itemsize) beyond the limit,
  which also catches a shape whose product overflows;
- a ``.npy`` header whose declared array size does not match the bytes the member holds.

The limit is ``DEFAULT_MAX_BYTES`` (4 GiB), or ``$ADVKIT_NPZ_MAX_BYTES`` (a number of bytes), or
the ``limit`` argument.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from advkit.errors import DataFormatError, InvalidParameterError

DEFAULT_MAX_BYTES = 4 * 2**30
MAX_BYTES_ENV = "ADVKIT_NPZ_MAX_BYTES"
_MAGIC = b"\x93NUMPY"


def max_bytes(limit: int | None = None) -> int:
    """The limit in force: ``limit``, else ``$ADVKIT_NPZ_MAX_BYTES``, else 4 GiB."""
    if limit is None:
        text = os.environ.get(MAX_BYTES_ENV, "").strip()
        if not text:
            return DEFAULT_MAX_BYTES
        try:
            limit = int(text)
        except ValueError:
            raise InvalidParameterError(
                MAX_BYTES_ENV, text, "a whole number of bytes (e.g. 8589934592 for 8 GiB); fix "
                "or unset the environment variable") from None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidParameterError(MAX_BYTES_ENV, limit, "a positive whole number of bytes")
    return limit


def _size(n: int) -> str:
    return f"{n:,} bytes ({n / 2**30:.3g} GiB)"


def check_npz(path: str | os.PathLike, limit: int | None = None) -> None:
    """Refuse an ``.npz`` at ``path`` that would decompress beyond the limit (see the module doc).

    Reads the zip directory and the ``.npy`` headers only. A member that is not ``.npy`` data, or
    a file that is not a zip, is left for the reader to report.
    """
    cap = max_bytes(limit)
    path = Path(path)
    fix = (f"use a smaller file, or raise the limit with ${MAX_BYTES_ENV} (bytes) if the data "
           "really is that large")
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            member = info.filename
            total += info.file_size
            if info.file_size > cap:
                raise DataFormatError(
                    f"{path}: the member {member!r} decompresses to {_size(info.file_size)}, over "
                    f"the limit of {_size(cap)}; {fix}")
            if total > cap:
                raise DataFormatError(
                    f"{path}: the members up to {member!r} decompress to {_size(total)} in all, "
                    f"over the limit of {_size(cap)}; {fix}")
            _check_header(path, zf, info, cap, fix)


def _check_header(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int,
                  fix: str) -> None:
    member = info.filename
    with zf.open(info) as f:
        head = f.read(len(_MAGIC) + 2)  # the magic string and the format version
        if len(head) < len(_MAGIC) + 2 or head[: len(_MAGIC)] != _MAGIC:
            return  # not .npy data: the reader reports it
        try:
            read = (np.lib.format.read_array_header_1_0 if head[-2] == 1
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(f)
        except ValueError as exc:
            raise DataFormatError(f"{path}: the member {member!r} has a malformed .npy header "
                                  f"({exc}); save it again with numpy.savez") from None
        header_end = f.tell()
    if any(s < 0 for s in shape):
        raise DataFormatError(f"{path}: the member {member!r} declares the shape {shape} with a "
                              "negative dimension; the file is corrupt or crafted")
    if dtype.hasobject:
        return  # pickled objects: the reader refuses them without unpickling
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if nbytes > cap:
        raise DataFormatError(
            f"{path}: the member {member!r} declares an array of shape {shape} and dtype {dtype}, "
            f"{_size(nbytes)}, over the limit of {_size(cap)}; {fix}")
    held = info.file_size - header_end
    if held != nbytes:
        raise DataFormatError(
            f"{path}: the member {member!r} declares an array of shape {shape} and dtype {dtype} "
            f"({_size(nbytes)}) but holds {_size(max(held, 0))} of data; the file is truncated, "
            "corrupt or crafted: save it again with numpy.savez")
