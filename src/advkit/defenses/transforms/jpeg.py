"""JPEG compression as an input transformation: the baseline-JPEG lossy round trip in torch.

Used as a defense by Dziugaite, Ghahramani & Roy (2016), "A study of the effect of JPG compression
on adversarial images", and Guo, Rana, Cisse & van der Maaten (2018), "Countering Adversarial
Images using Input Transformations", ICLR; broken by BPDA in Athalye, Carlini & Wagner (2018).

The lossy part of baseline JPEG (ITU-T T.81, 1992) is applied to each channel as a grayscale image:
values to 8-bit pixels, level shift by -128, pad to a multiple of 8 by edge replication, orthonormal
8 x 8 block DCT-II, divide by the quantisation table and round, multiply back, inverse DCT, shift
back, round and clip to 0..255. The table is the standard luminance table of Annex K scaled by
``quality`` as the IJG library does (scale 5000/q below 50, 200 - 2q from 50; entries
floor((T * scale + 50) / 100) clipped to 1..255). Colour images are treated channel by channel with
the luminance table (no YCbCr conversion or chroma subsampling); entropy coding is lossless and
omitted. Rounding makes the gradient zero almost everywhere, hence ``gradient = "bpda"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from advkit.defenses.transforms.base import InputTransform, from_unit, to_unit
from advkit.errors import InputContractError, check_range
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_EVASION

LUMINANCE_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)


def quantisation_table(quality: int) -> torch.Tensor:
    """The 8 x 8 luminance table scaled by ``quality`` (1..100) as the IJG library scales it."""
    check_range("quality", quality, lo=1, hi=100, kind=int)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    t = torch.tensor(LUMINANCE_TABLE, dtype=torch.float64)
    return torch.floor((t * scale + 50) / 100).clamp(1, 255)


def dct_matrix(size: int = 8, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix D: the DCT of a block X is D X D^T, its inverse D^T C D."""
    k = torch.arange(size, dtype=dtype)[:, None]
    n = torch.arange(size, dtype=dtype)[None, :]
    d = torch.cos((2 * n + 1) * k * math.pi / (2 * size)) * math.sqrt(2.0 / size)
    d[0] = d[0] / math.sqrt(2.0)
    return d


def jpeg_round_trip(pixels: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress and decompress 8-bit pixel values (N, C, H, W) in 0..255 (float)."""
    if pixels.dim() != 4:
        raise InputContractError(f"JPEG needs images (N, C, H, W), got {tuple(pixels.shape)}")
    n, c, h, w = pixels.shape
    ph, pw = (-h) % 8, (-w) % 8
    x = pixels.reshape(n * c, 1, h, w) - 128.0
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    hh, ww = x.shape[-2] // 8, x.shape[-1] // 8
    blocks = x.reshape(n * c, hh, 8, ww, 8).permute(0, 1, 3, 2, 4)  # (B, hh, ww, 8, 8)
    d = dct_matrix(8).to(device=x.device, dtype=x.dtype)
    q = quantisation_table(quality).to(device=x.device, dtype=x.dtype)
    coef = d @ blocks @ d.T
    coef = torch.round(coef / q) * q
    rec = d.T @ coef @ d
    rec = rec.permute(0, 1, 3, 2, 4).reshape(n * c, 1, hh * 8, ww * 8)[..., :h, :w] + 128.0
    return torch.round(rec).clamp(0, 255).reshape(n, c, h, w)


@register("jpeg", family="defense", threat=MITIGATES_EVASION)
@dataclass(frozen=True, kw_only=True)
class JPEG(InputTransform):
    """JPEG compression at ``quality`` (1..100), the DCT-quantise round trip (Guo et al. 2018)."""

    quality: int = param(75, int, lo=1, hi=100)
    gradient: ClassVar[str] = "bpda"
    randomized: ClassVar[bool] = False

    def __post_init__(self):
        check_params(self)

    def apply(self, x, bounds=(0.0, 1.0), generator=None):
        # float64 inside: rounding at .5 boundaries must not depend on the input's precision
        pixels = torch.round(to_unit(x.double(), bounds).clamp(0, 1) * 255.0)
        return from_unit(jpeg_round_trip(pixels, self.quality) / 255.0, bounds).to(x.dtype)
