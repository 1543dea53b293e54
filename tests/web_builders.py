"""Malformed uploads for the web app tests, built cheaply."""

from __future__ import annotations

import io
import struct
import zlib


def png_bytes(size=(8, 8), value=200) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="PNG")
    return buf.getvalue()


def stroke_png(size: int = 64) -> bytes:
    """A white vertical stroke on black (a hand-drawn "1", roughly)."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (size, size), 0)
    ImageDraw.Draw(im).line([(size // 2, size // 8), (size // 2, size - size // 8)], fill=255,
                            width=size // 6)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png_header(side: int = 20_000) -> bytes:
    """A valid PNG signature and IHDR claiming side x side pixels (8-bit grey), one tiny IDAT
    and IEND: a few dozen bytes that would decode to side² bytes."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def tiny_spec(title: str = "web test: digits / mlp") -> str:
    """The smallest audit that runs every part of the pipeline the run page drives: a built-in
    dataset, a zoo model trained on the fly, one attack at two budgets, a report, the history."""
    return (f'title: "{title}"\nseed: 0\ndataset: {{name: digits}}\n'
            "model: {zoo: mlp, epochs: 2}\nevaluation: {n_samples: 32}\n"
            "attacks:\n  - {name: fgsm, eps: [0, 0.2]}\n")
