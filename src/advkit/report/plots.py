"""PNG figures for the report: plots with interval bands, and captioned image grids.

Figures are drawn with ``matplotlib.figure.Figure`` and ``FigureCanvasAgg`` directly, never through
pyplot, so rendering a report neither selects a backend nor touches a user's interactive session.
Each figure is drawn under matplotlib's default style (the user's rcParams are restored afterwards)
so reports look the same on every machine: dark text on white.
"""

from __future__ import annotations

import base64
import io
import math
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import matplotlib.style
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from advkit.audit.report import Image, Plot, Series
from advkit.report.json import ReportFormatError

DPI = 100
PLOT_SIZE = (5.6, 3.4)  # inches
CELL = 1.0  # inches per image-grid cell
PLOT_KINDS = ("line", "hist", "scatter", "bar", "heatmap")

_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
          "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.facecolor": "white",
          "axes.facecolor": "white", "savefig.facecolor": "white"}


@contextmanager
def _report_style() -> Iterator[None]:
    with matplotlib.style.context(["default", _STYLE]):
        yield


def to_data_uri(png: bytes, mime: str = "image/png") -> str:
    """``data:image/png;base64,...`` for embedding ``png`` in a self-contained HTML file."""
    return f"data:{mime};base64," + base64.b64encode(png).decode("ascii")


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    """Render a ``Figure`` to PNG bytes with the Agg canvas (no pyplot, no metadata timestamp)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def plot_png(plot: Plot, *, dpi: int = DPI, size: tuple[float, float] = PLOT_SIZE) -> bytes:
    """One ``Plot`` as PNG bytes (see ``plot_figure``)."""
    with _report_style():
        return figure_png(plot_figure(plot, size=size), dpi=dpi)


def plot_figure(plot: Plot, *, size: tuple[float, float] = PLOT_SIZE) -> Figure:
    """Draw a ``Plot`` on a new Agg ``Figure``.

    ``line``: y against x with markers, and a shaded band between ``lo`` and ``hi`` when given.
    ``bar``: grouped bars per x (numbers or category strings), error bars from ``lo``/``hi``.
    ``scatter``: points, vertical error bars from ``lo``/``hi``.
    ``hist``: the distribution of each series' samples ``y`` (``x`` when ``y`` is empty), on
    common bins. ``None`` values are drawn as gaps.
    ``heatmap``: one row per series (its label), one column per ``x`` (the column labels, the same
    in every series), cells ``y`` (shares in [0, 1]; see ``heatmap_figure``).
    """
    if plot.kind not in PLOT_KINDS:
        raise ReportFormatError(f"plot {plot.title!r} has kind {plot.kind!r}; "
                                f"use one of {', '.join(PLOT_KINDS)}")
    if plot.kind == "heatmap":
        cols = [str(c) for c in plot.series[0].x] if plot.series else []
        if any([str(c) for c in s.x] != cols for s in plot.series):
            raise ReportFormatError(f"heat map {plot.title!r}: every series (row) must have the "
                                    "same x (column labels)")
        return heatmap_figure([s.y for s in plot.series], [s.label for s in plot.series], cols,
                              title=plot.title, xlabel=plot.xlabel, ylabel=plot.ylabel)
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if not plot.series:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes,
                color="0.4")
    elif plot.kind == "hist":
        _hist(ax, plot.series)
    elif plot.kind == "bar":
        _bars(ax, plot)
    else:
        for s in plot.series:
            _line_or_scatter(ax, plot, s)
    ax.set_title(plot.title)
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    if plot.scale == "loglog":  # non-positive values are left out of a log axis
        ax.set_xscale("log")
        ax.set_yscale("log")
    elif plot.scale != "linear":
        raise ReportFormatError(f"plot {plot.title!r} has scale {plot.scale!r}; use linear or "
                                "loglog")
    if plot.ylim is not None:
        ax.set_ylim(*plot.ylim)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    if any(s.label for s in plot.series):
        ax.legend(loc="best", frameon=False)
    return fig


def _floats(values, what: str, plot: Plot | None = None) -> np.ndarray:
    try:
        return np.asarray([np.nan if v is None else v for v in values], dtype=float)
    except (TypeError, ValueError) as e:
        where = f" of plot {plot.title!r}" if plot is not None else ""
        raise ReportFormatError(f"{what}{where} must be numbers (or None): {e}") from e


def _checked(plot: Plot, s: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                              np.ndarray | None]:
    name = f"series {s.label!r}"
    y = _floats(s.y, f"{name}.y", plot)
    lo = None if s.lo is None else _floats(s.lo, f"{name}.lo", plot)
    hi = None if s.hi is None else _floats(s.hi, f"{name}.hi", plot)
    for part, arr in (("x", s.x), ("lo", lo), ("hi", hi)):
        if arr is not None and len(arr) != len(y):
            raise ReportFormatError(f"{name} of plot {plot.title!r}: {part} has {len(arr)} values "
                                    f"but y has {len(y)}; give one {part} per y")
    if (lo is None) != (hi is None):
        raise ReportFormatError(f"{name} of plot {plot.title!r} has only one of lo/hi; "
                                "give both bounds of the interval or neither")
    x = _floats(s.x, f"{name}.x", plot) if plot.kind != "bar" else np.asarray(s.x, dtype=object)
    return x, y, lo, hi


def _line_or_scatter(ax, plot: Plot, s: Series) -> None:
    x, y, lo, hi = _checked(plot, s)
    if plot.kind == "line":
        marker = "o" if len(x) <= 60 else None  # a dense curve (a ROC) is drawn as a line
        (line,) = ax.plot(x, y, marker=marker, markersize=3.5, linewidth=1.4, label=s.label or None)
        if lo is not None:
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.18, linewidth=0)
    else:
        pts = ax.scatter(x, y, s=12, alpha=0.75, label=s.label or None)
        if lo is not None:
            ax.errorbar(x, y, yerr=_yerr(y, lo, hi), fmt="none", linewidth=0.8,
                        ecolor=pts.get_facecolor()[0])


def _yerr(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.clip(np.vstack([y - lo, hi - y]), 0.0, None)


def _bars(ax, plot: Plot) -> None:
    checked = [(s, *_checked(plot, s)) for s in plot.series]
    categorical = any(isinstance(v, str) for _, x, *_ in checked for v in x)
    if categorical:
        cats: list = []
        for _, x, *_ in checked:
            cats.extend(v for v in x if v not in cats)
        pos = {c: float(i) for i, c in enumerate(cats)}
        step = 1.0
    else:
        xs = np.unique(np.concatenate([_floats(x, "x", plot) for _, x, *_ in checked]))
        step = float(np.min(np.diff(xs))) if len(xs) > 1 else 1.0
    width = 0.8 * step / len(checked)
    for i, (s, x, y, lo, hi) in enumerate(checked):
        base = (np.array([pos[v] for v in x]) if categorical else _floats(x, "x", plot))
        at = base + (i - (len(checked) - 1) / 2) * width
        yerr = None if lo is None else _yerr(y, lo, hi)
        ax.bar(at, y, width=width, yerr=yerr, capsize=2, label=s.label or None,
               error_kw={"linewidth": 0.8})
    if categorical:
        ax.set_xticks(list(pos.values()), [str(c) for c in pos])


def _hist(ax, series: Sequence[Series]) -> None:
    samples = []
    for s in series:
        vals = _floats(s.y if len(s.y) else s.x, f"series {s.label!r}")
        samples.append(vals[np.isfinite(vals)])
    pooled = np.concatenate(samples) if samples else np.array([])
    if pooled.size == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.4")
        return
    edges = np.histogram_bin_edges(pooled, bins="auto")
    if len(edges) > 51:
        edges = np.linspace(edges[0], edges[-1], 51)
    for s, vals in zip(series, samples, strict=True):
        ax.hist(vals, bins=edges, alpha=0.5 if len(series) > 1 else 0.8, label=s.label or None)


def image_grid_png(images: Sequence[Image], columns: int = 8, *, dpi: int = DPI,
                   cell: float = CELL) -> bytes:
    """A captioned grid of images as PNG bytes (see ``image_grid_figure``)."""
    with _report_style():
        return figure_png(image_grid_figure(images, columns, cell=cell), dpi=dpi)


def image_grid_figure(images: Sequence[Image], columns: int = 8, *, cell: float = CELL) -> Figure:
    """Draw images in rows of at most ``columns``, one block of rows per ``Image.group``.

    Groups keep their order of first appearance; each group's first row is labelled with the group
    name. Each cell shows its caption underneath. 2-D images use a gray colormap; every image is
    shown on the fixed scale [0, 1] (vmin 0, vmax 1), never rescaled.
    """
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ReportFormatError(f"image grid columns must be an integer >= 1, got {columns!r}")
    groups: dict[str, list[Image]] = {}
    for im in images:
        groups.setdefault(im.group, []).append(im)
    ncols = max([min(columns, len(g)) for g in groups.values()], default=1)
    layout: list[tuple[str, list[Image]]] = []  # one entry per row: (label, images)
    for name, members in groups.items():
        for r in range(math.ceil(len(members) / ncols)):
            layout.append((name if r == 0 else "", members[r * ncols:(r + 1) * ncols]))
    labelled = any(name for name in groups)
    nrows = max(len(layout), 1)
    fig = Figure(figsize=(ncols * cell + (1.2 if labelled else 0.0), nrows * (cell + 0.3)),
                 dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    wrap = max(8, int(18 * cell))
    for r, (label, row) in enumerate(layout):
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(row):
                ax.set_axis_off()
                continue
            im = row[c]
            pixels = _pixels(im)
            if pixels.ndim == 2:
                ax.imshow(pixels, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(np.clip(pixels, 0.0, 1.0), vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_linewidth(0.4)
                spine.set_color("0.6")
            caption = "\n".join(textwrap.wrap(str(im.caption), wrap, max_lines=2,
                                              placeholder="…"))
            ax.set_xlabel(caption, fontsize=7, labelpad=2)
            if c == 0 and label:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8,
                              fontweight="bold", labelpad=6)
    if not layout:
        axes[0][0].set_axis_off()
        axes[0][0].text(0.5, 0.5, "no images", ha="center", va="center", color="0.4")
    return fig


def _pixels(im: Image) -> np.ndarray:
    """Image pixels as H×W or H×W×3 floats (accepts tensors, H×W×1 and C×H×W with C in 1, 3)."""
    p = im.pixels
    if hasattr(p, "detach") and hasattr(p, "cpu"):
        p = p.detach().cpu().numpy()
    try:
        arr = np.asarray(p, dtype=float)
    except (TypeError, ValueError) as e:
        raise ReportFormatError(f"image {im.caption!r}: pixels must be numbers: {e}") from e
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3) and arr.shape[0] in (1, 3):
        arr = np.moveaxis(arr, 0, -1)  # C×H×W -> H×W×C
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3) or 0 in arr.shape:
        raise ReportFormatError(f"image {im.caption!r} has pixel shape {tuple(arr.shape)}; "
                                "give H×W (gray) or H×W×3 (RGB) values in [0, 1]")
    return arr


def heatmap_png(values, row_labels: Sequence[str], col_labels: Sequence[str], *, title: str = "",
                xlabel: str = "", ylabel: str = "", dpi: int = DPI) -> bytes:
    """A matrix of shares in [0, 1] as an annotated heat map, PNG bytes (see ``heatmap_figure``)."""
    with _report_style():
        return figure_png(heatmap_figure(values, row_labels, col_labels, title=title,
                                         xlabel=xlabel, ylabel=ylabel), dpi=dpi)


def heatmap_figure(values, row_labels: Sequence[str], col_labels: Sequence[str], *,
                   title: str = "", xlabel: str = "", ylabel: str = "") -> Figure:
    """Draw a rows x columns matrix of shares (e.g. the transferability matrix: sources x victims)
    on the fixed scale [0, 1], never rescaled, each cell annotated with its value in %. NaN
    cells (no points) are left blank and marked "n/a"."""
    try:
        arr = np.asarray([[np.nan if v is None else v for v in row] for row in values],
                         dtype=float)
    except (TypeError, ValueError) as e:
        raise ReportFormatError(f"heat map values must be rows of numbers (or None): {e}") from e
    if arr.ndim != 2 or 0 in arr.shape:
        raise ReportFormatError(f"heat map values must be a non-empty 2-D matrix, got shape "
                                f"{tuple(arr.shape)}")
    if len(row_labels) != arr.shape[0] or len(col_labels) != arr.shape[1]:
        raise ReportFormatError(f"heat map of shape {tuple(arr.shape)} got {len(row_labels)} row "
                                f"and {len(col_labels)} column labels; give one per row/column")
    finite = arr[np.isfinite(arr)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ReportFormatError("heat map values must be shares in [0, 1] (or NaN for no data)")
    nr, nc = arr.shape
    fig = Figure(figsize=(2.2 + 0.9 * nc, 1.2 + 0.45 * nr), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(arr), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(nr):
        for j in range(nc):
            v = arr[i, j]
            text = "n/a" if not np.isfinite(v) else f"{100 * v:.0f}%"
            color = "black" if np.isfinite(v) and v > 0.6 else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color=color if np.isfinite(v) else "0.3")
    ax.set_xticks(range(nc), [str(c) for c in col_labels], rotation=30, ha="right")
    ax.set_yticks(range(nr), [str(r) for r in row_labels])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, fraction=0.05)
    return fig


__all__ = ["to_data_uri", "figure_png", "plot_png", "plot_figure", "image_grid_png",
           "image_grid_figure", "heatmap_png", "heatmap_figure", "PLOT_KINDS"]
