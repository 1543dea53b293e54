"""The run manifest: library versions, seed, command and SHA-256 of model, data and spec."""

from __future__ import annotations

import hashlib
import platform
import sys
import time
from pathlib import Path
from typing import Any


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_state_dict(state: dict) -> str:
    """SHA-256 over a model's tensors (names, shapes, dtypes and bytes) in key order."""
    import torch

    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def versions() -> dict[str, str]:
    import numpy
    import torch

    import advkit

    out = {
        "advkit": advkit.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }
    for mod in ("sklearn", "scipy", "pandas"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def build_manifest(
    *,
    seed: int,
    model_sha256: str | None = None,
    data_sha256: str | None = None,
    spec_sha256: str | None = None,
    started: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    now = time.time()
    started = started if started is not None else now
    m = {
        "versions": versions(),
        "seed": seed,
        "sha256": {"model": model_sha256, "data": data_sha256, "spec": spec_sha256},
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "duration_s": round(now - started, 3),
    }
    if extra:
        m.update(extra)
    return m
