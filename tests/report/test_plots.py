"""Plots and image grids: what is drawn on the figure, and the PNG bytes that come out."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import BarContainer
from PIL import Image as PILImage

from advkit.audit.report import Image, Plot, Series
from advkit.errors import AdvkitError
from advkit.report.plots import (
    DPI,
    PLOT_SIZE,
    image_grid_figure,
    image_grid_png,
    plot_figure,
    plot_png,
    to_data_uri,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def banded(label: str, offset: float) -> Series:
    x = [0.0, 1.0, 2.0, 3.0]
    y = [0.9 - offset, 0.7 - offset, 0.5 - offset, 0.3 - offset]
    return Series(label, x, y, [v - 0.05 for v in y], [v + 0.05 for v in y])


def decode(png: bytes) -> np.ndarray:
    assert png[:8] == PNG_MAGIC
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB"))


def test_line_plot_draws_bands_markers_and_limits():
    plot = Plot("t", "eps", "acc", [banded("a", 0.0), banded("b", 0.1),
                                    Series("c", [0, 1], [0.2, 0.1])], ylim=(0.0, 1.0))
    ax = plot_figure(plot).axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2  # only the series with lo/hi get a band
    lo, hi = np.array(banded("a", 0.0).lo), np.array(banded("a", 0.0).hi)
    verts = bands[0].get_paths()[0].vertices[:, 1]
    assert verts.min() == pytest.approx(lo.min()) and verts.max() == pytest.approx(hi.max())
    assert [ln.get_label() for ln in ax.get_lines()] == ["a", "b", "c"]
    assert all(ln.get_marker() not in (None, "None", "") for ln in ax.get_lines())
    assert ax.get_ylim() == (0.0, 1.0)
    assert ax.get_title() == "t" and ax.get_xlabel() == "eps" and ax.get_ylabel() == "acc"
    assert ax.get_legend() is not None


def test_plot_png_is_small_png_of_the_configured_size():
    png = plot_png(Plot("t", "x", "y", [banded("a", 0.0)]))
    h, w, _ = decode(png).shape
    assert (w, h) == (round(PLOT_SIZE[0] * DPI), round(PLOT_SIZE[1] * DPI))
    assert len(png) < 100_000


def test_bar_plot_categories_and_error_bars():
    s1 = Series("clean", ["none", "jpeg", "squeeze"], [0.9, 0.8, 0.85], [0.85, 0.7, 0.8],
                [0.95, 0.9, 0.9])
    s2 = Series("robust", ["none", "jpeg", "squeeze"], [0.1, 0.3, 0.2])
    ax = plot_figure(Plot("b", "defense", "acc", [s1, s2], kind="bar")).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "jpeg", "squeeze"]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx(s1.y + s2.y)
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert bars[1].errorbar is None  # no interval, no error bar
    segments = bars[0].errorbar.lines[2][0].get_segments()
    ends = np.array([[seg[0][1], seg[1][1]] for seg in segments])
    np.testing.assert_allclose(ends, np.column_stack([s1.lo, s1.hi]))


def test_hist_uses_common_bins_and_scatter_draws_points():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 200).tolist(), rng.normal(1, 1, 100).tolist()
    ax = plot_figure(Plot("h", "score", "count", [Series("in", [], a), Series("out", [], b)],
                          kind="hist")).axes[0]
    bars = ax.patches
    assert sum(p.get_height() for p in bars) == pytest.approx(len(a) + len(b))
    lefts = sorted({round(p.get_x(), 9) for p in bars})
    assert len(lefts) == len(bars) // 2  # both series share the same bin edges
    ax = plot_figure(Plot("s", "x", "y", [Series("p", [1, 2, 3], [3, 2, 1])],
                          kind="scatter")).axes[0]
    assert len(ax.collections[0].get_offsets()) == 3


def test_none_values_are_gaps_not_errors():
    png = plot_png(Plot("t", "x", "y", [Series("a", [0, 1, 2], [0.5, None, 0.4])]))
    assert png[:8] == PNG_MAGIC


@pytest.mark.parametrize("plot, needle", [
    (Plot("t", "x", "y", [Series("a", [0, 1], [1.0])]), "x has 2 values but y has 1"),
    (Plot("t", "x", "y", [Series("a", [0, 1], [1, 2], [0, 1], None)]), "only one of lo/hi"),
    (Plot("t", "x", "y", [Series("a", [0], [1])], kind="pie"), "kind 'pie'"),
    (Plot("t", "x", "y", [Series("a", [0], ["high"])]), "must be numbers"),
])
def test_bad_plots_raise_clear_errors(plot, needle):
    with pytest.raises(AdvkitError, match=needle):
        plot_png(plot)


def test_image_grid_gray_scale_is_fixed_to_unit_range():
    """A constant 0.5 image must come out mid gray (vmin 0, vmax 1, gray cmap), not rescaled."""
    for level in (0.25, 0.5):
        rgb = decode(image_grid_png([Image("c", np.full((8, 8), level))], columns=1))
        expected = level * 255
        hit = (np.abs(rgb.astype(float) - expected) <= 2).all(axis=-1)
        assert hit.sum() > 1000  # the cell's ~80x80 px, in all three channels


def test_image_grid_rows_follow_groups():
    rng = np.random.default_rng(1)
    one = [Image(f"i{i}", rng.random((8, 8)), group="g") for i in range(8)]
    two = [Image(f"i{i}", rng.random((8, 8)), group=("clean" if i < 4 else "adv"))
           for i in range(8)]
    fig = image_grid_figure(two, columns=8)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 8
    assert sorted({ax.get_subplotspec().rowspan.start for ax in shown}) == [0, 1]
    assert [ax.get_ylabel() for ax in shown if ax.get_ylabel()] == ["clean", "adv"]
    assert [ax.get_xlabel() for ax in shown] == [f"i{i}" for i in range(8)]
    h1 = decode(image_grid_png(one, columns=8)).shape[0]
    h2 = decode(image_grid_png(two, columns=8)).shape[0]
    assert h2 > 1.5 * h1


def test_image_grid_wraps_rows_and_accepts_rgb_and_chw():
    rng = np.random.default_rng(2)
    ims = [Image("hwc", rng.random((6, 6, 3))), Image("chw", rng.random((3, 6, 6))),
           Image("hw1", rng.random((6, 6, 1))), Image("gray", rng.random((6, 6)))]
    fig = image_grid_figure(ims, columns=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 4
    assert max(ax.get_subplotspec().rowspan.start for ax in shown) == 1  # 4 images, 3 per row
    assert [ax.images[0].get_array().shape for ax in shown] == [(6, 6, 3), (6, 6, 3), (6, 6),
                                                               (6, 6)]


@pytest.mark.parametrize("pixels", [np.zeros((2, 3, 4, 5)), np.zeros((4, 4, 2)), np.zeros((0, 4))])
def test_image_grid_refuses_bad_shapes(pixels):
    with pytest.raises(AdvkitError, match="pixel shape"):
        image_grid_png([Image("bad", pixels)])


def test_data_uri_round_trip():
    png = plot_png(Plot("t", "x", "y", [Series("a", [0, 1], [0, 1])]))
    uri = to_data_uri(png)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png


def test_rendering_leaves_user_matplotlib_state_alone():
    before = dict(matplotlib.rcParams)
    plot_png(Plot("t", "x", "y", [banded("a", 0.0)]))
    image_grid_png([Image("c", np.zeros((4, 4)))])
    assert dict(matplotlib.rcParams) == before


def test_rendering_never_imports_pyplot():
    code = ("import sys, numpy as np\n"
            "from advkit.audit.report import Plot, Series, Image\n"
            "from advkit.report.plots import plot_png, image_grid_png\n"
            "plot_png(Plot('t', 'x', 'y', [Series('a', [0, 1], [0, 1], [0, 0], [1, 1])]))\n"
            "image_grid_png([Image('c', np.zeros((4, 4)))])\n"
            "print('matplotlib.pyplot' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                              "MPLBACKEND": "TkAgg", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
