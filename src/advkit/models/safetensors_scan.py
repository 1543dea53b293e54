"""Check that a file really is safetensors, and that an advkit folder's config is plain JSON.

A safetensors file is an 8-byte little-endian header length ``n``, then ``n`` bytes of a JSON
object (``name -> {dtype, shape, data_offsets}``, plus an optional ``__metadata__`` of strings),
then the tensor data. :func:`safetensors_problem` checks all of it without loading a tensor: the
header parses, every dtype is known, every shape is a list of non-negative integers, every tensor's
byte range has exactly the size its dtype and shape imply, and the ranges tile the data section
with no gap, overlap or trailing bytes (what the safetensors library itself requires). Nothing in
such a file runs code; what makes it unsafe is only that it is not what it claims to be.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
MAX_CONFIG_BYTES = 1 << 20  # as load_model reads config.json

# bits per element of each dtype the safetensors format defines
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """Whether the leading bytes are those of a safetensors file (a plausible length, then ``{``)."""
    return len(head) > 8 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") \
        <= size - 8


def safetensors_problem(path: Path) -> str | None:
    """None when the file at ``path`` is a well-formed safetensors file, else what is wrong."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or n < 2 or n > size - 8:
            return f"its header length ({n} bytes) does not fit in the file ({size} bytes)"
        if n > MAX_HEADER_BYTES:
            return f"its header ({n} bytes) is larger than the safetensors limit of 100 MB"
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return f"its header is not valid JSON: {exc}"
    if not isinstance(header, dict):
        return f"its header is a JSON {type(header).__name__}, not an object"
    data_size = size - 8 - n
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                return "its __metadata__ is not a mapping of strings"
            continue
        problem = _tensor_problem(info)
        if problem:
            return f"tensor {name[:80]!r}: {problem}"
        spans.append((*info["data_offsets"], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            return (f"tensor {name[:80]!r} starts at byte {begin} of the data, not at {end}: the "
                    "tensors overlap or leave a gap")
        end = stop
    if end != data_size:
        return (f"its tensors cover {end} bytes of data but the file holds {data_size} after the "
                "header (truncated, or bytes appended)")
    return None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _tensor_problem(info: object) -> str | None:
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        return "not an object with dtype, shape and data_offsets"
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in _DTYPE_BITS:
        return f"unknown dtype {str(dtype)[:40]!r}"
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        return f"shape {str(shape)[:80]} is not a list of non-negative integers"
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
            or offsets[0] > offsets[1]):
        return f"data_offsets {str(offsets)[:80]} is not [begin, end] with begin <= end"
    bits = math.prod(shape) * _DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        return (f"{dtype} of shape {shape} needs {bits / 8:g} bytes but data_offsets give "
                f"{offsets[1] - offsets[0]}")
    return None


def config_problem(path: Path) -> str | None:
    """None when ``path`` (an advkit folder's config.json) is a JSON object of at most 1 MiB."""
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            return f"{path.name} is {size} bytes, larger than the 1 MiB an advkit config may be"
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return f"{path.name} is not readable JSON: {exc}"
    if not isinstance(config, dict):
        return f"{path.name} holds a JSON {type(config).__name__}, not an object"
    return None
