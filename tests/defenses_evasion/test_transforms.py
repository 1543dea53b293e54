"""Input transformations: oracles against independent implementations, and their validation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy.fft import dctn, idctn
from scipy.ndimage import median_filter

from advkit import registry
from advkit.defenses.transforms import JPEG, BitDepth, GaussianNoise, MedianSmoothing
from advkit.defenses.transforms.jpeg import LUMINANCE_TABLE, dct_matrix, quantisation_table
from advkit.errors import InvalidParameterError


def _images(n=3, c=1, h=28, w=28, seed=0):
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed))


def _reference_jpeg(img: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-block loop with scipy's orthonormal DCT (an independent implementation); also returns
    where a coefficient or decoded value sits on a rounding tie (x.5), which either side may
    round (the pixels of such a block are left out of the comparison)."""
    q = quality
    scale = 5000 // q if q < 50 else 200 - 2 * q
    table = np.clip(np.floor((np.array(LUMINANCE_TABLE, float) * scale + 50) / 100), 1, 255)
    h, w = img.shape
    p = np.round(np.clip(img.astype(np.float64), 0, 1) * 255) - 128
    p = np.pad(p, ((0, (-h) % 8), (0, (-w) % 8)), mode="edge")
    out = np.empty_like(p)
    tie = np.zeros(p.shape, dtype=bool)
    for i in range(0, p.shape[0], 8):
        for j in range(0, p.shape[1], 8):
            coef = dctn(p[i:i + 8, j:j + 8], norm="ortho") / table
            out[i:i + 8, j:j + 8] = idctn(np.round(coef) * table, norm="ortho")
            tie[i:i + 8, j:j + 8] = (np.abs(coef - np.floor(coef) - 0.5) < 1e-9).any()
    dec = out[:h, :w] + 128
    tie = tie[:h, :w] | (np.abs(dec - np.floor(dec) - 0.5) < 1e-9)
    return np.clip(np.round(dec), 0, 255) / 255, tie


@pytest.mark.parametrize("quality", [10, 50, 75, 95])
@pytest.mark.parametrize("size", [(28, 28), (13, 21)])
def test_jpeg_matches_a_per_block_scipy_reference(quality, size):
    x = _images(2, 1, *size, seed=quality)
    got = JPEG(quality=quality)(x).numpy()
    for i in range(2):
        ref, tie = _reference_jpeg(x[i, 0].numpy(), quality)
        np.testing.assert_allclose(got[i, 0][~tie], ref[~tie], atol=1e-6)
        assert tie.mean() < 0.5


def test_jpeg_tables_and_dct():
    d = dct_matrix(8)
    assert torch.allclose(d @ d.T, torch.eye(8, dtype=d.dtype), atol=1e-12)
    assert torch.equal(quantisation_table(50), torch.tensor(LUMINANCE_TABLE, dtype=torch.float64))
    assert (quantisation_table(100) == 1).all()
    assert (quantisation_table(10)[0] > quantisation_table(90)[0]).all()


@pytest.mark.parametrize("quality", [50, 75])
def test_jpeg_is_close_to_libjpeg(quality):
    pil = pytest.importorskip("PIL.Image")
    x = _images(1, 1, 32, 32, seed=4)
    pixels = np.round(x[0, 0].numpy() * 255).astype(np.uint8)
    buf = io.BytesIO()
    pil.fromarray(pixels, mode="L").save(buf, format="JPEG", quality=quality)
    ref = np.asarray(pil.open(io.BytesIO(buf.getvalue())), dtype=np.float64)
    got = JPEG(quality=quality)(x)[0, 0].double().numpy() * 255
    # libjpeg's fixed-point DCT differs from the exact one by rounding (about a gray level at
    # most, on a few pixels); the compression error itself is an order of magnitude larger
    diff = np.abs(got - ref).mean()
    assert diff <= 0.5
    assert diff <= 0.1 * np.abs(ref - pixels).mean()


def test_median_matches_scipy_mirror():
    x = _images(2, 3, 9, 11, seed=1)
    got = MedianSmoothing(kernel=3)(x).numpy()
    ref = median_filter(x.numpy(), size=(1, 1, 3, 3), mode="mirror")
    np.testing.assert_allclose(got, ref)
    assert MedianSmoothing(kernel=2)(x).shape == x.shape
    # a lone bright pixel disappears; a constant image stays
    spot = torch.zeros(1, 1, 7, 7)
    spot[0, 0, 3, 3] = 1
    assert MedianSmoothing(kernel=3)(spot).abs().max() == 0
    assert torch.equal(MedianSmoothing(kernel=5)(torch.full((1, 1, 6, 6), 0.4)),
                       torch.full((1, 1, 6, 6), 0.4))


def test_bit_depth_levels_and_bounds():
    x = _images(2, 1, 8, 8)
    one = BitDepth(bits=1)(x)
    assert torch.equal(one, (x > 0.5).float())
    three = BitDepth(bits=3)(x)
    assert set((three * 7).round().unique().tolist()) <= set(range(8))
    assert (three - x).abs().max() <= 0.5 / 7 + 1e-6
    y = BitDepth(bits=2)(x * 2 - 1, (-1.0, 1.0))
    assert y.min() >= -1 and y.max() <= 1 and len(y.unique()) <= 4


def test_gaussian_noise_is_seeded_and_clipped():
    x = torch.full((4, 1, 16, 16), 0.5)
    t = GaussianNoise(sigma=0.1)
    a = t(x, (0.0, 1.0), torch.Generator().manual_seed(0))
    b = t(x, (0.0, 1.0), torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert (a - x).std().item() == pytest.approx(0.1, rel=0.1)
    assert t(torch.zeros(2, 1, 4, 4), (0.0, 1.0), torch.Generator()).min() >= 0


def test_registered_and_validated():
    names = registry.list("defense")
    for name in ("jpeg", "median-smoothing", "bit-depth", "gaussian-noise"):
        assert name in names
    for cls, bad in ((JPEG, {"quality": 0}), (JPEG, {"quality": 101}), (BitDepth, {"bits": 0}),
                     (MedianSmoothing, {"kernel": 0}), (GaussianNoise, {"sigma": -1.0})):
        with pytest.raises(InvalidParameterError, match=next(iter(bad))):
            cls(**bad)
    assert JPEG.gradient == BitDepth.gradient == GaussianNoise.gradient == "bpda"
    assert MedianSmoothing.gradient == "exact" and GaussianNoise.randomized


MINE = ("jpeg", "median-smoothing", "bit-depth", "gaussian-noise", "randomized-smoothing",
        "pgd-at", "fast-fgsm", "trades", "output-rounding", "output-topk", "labels-only",
        "feature-squeezing-detector")


@pytest.mark.parametrize("name", MINE)
def test_every_defense_builds_with_defaults_and_refuses_unknown_parameters(name):
    obj = registry.create(name)
    assert registry.get(name).family == "defense" and obj.name == name
    with pytest.raises(InvalidParameterError):
        registry.create(name, no_such_parameter=1)
