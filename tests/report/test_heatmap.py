"""The heat-map helper of the report's plots (used for the transferability matrix)."""

from __future__ import annotations

import math

import pytest

from advkit.errors import ReportFormatError
from advkit.report.plots import heatmap_figure, heatmap_png

PNG = b"\x89PNG\r\n\x1a\n"


def test_heatmap_draws_annotated_cells_on_a_fixed_scale():
    fig = heatmap_figure([[0.9, 0.2], [math.nan, 0.5]], ["src a", "src b"], ["vic a", "vic b"],
                         title="t")
    ax = fig.axes[0]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["20%", "50%", "90%", "n/a"]
    assert ax.images[0].get_clim() == (0.0, 1.0)  # never rescaled to the data
    assert [t.get_text() for t in ax.get_yticklabels()] == ["src a", "src b"]
    assert heatmap_png([[0.1]], ["a"], ["b"]).startswith(PNG)


@pytest.mark.parametrize("values, rows, cols", [
    ([[0.1, 0.2]], ["a"], ["b"]),  # 2 columns, 1 label
    ([[0.1]], ["a", "b"], ["c"]),
    ([[1.5]], ["a"], ["b"]),  # not a share
    ([[-0.1]], ["a"], ["b"]),
    ([["x"]], ["a"], ["b"]),
    ([], [], []),
    ([0.1, 0.2], ["a"], ["b"]),  # not 2-D
])
def test_bad_heatmaps_raise_report_format_errors(values, rows, cols):
    with pytest.raises(ReportFormatError):
        heatmap_figure(values, rows, cols)


def test_a_heatmap_plot_of_a_report_section_draws_rows_from_its_series():
    from advkit.audit.report import Plot, Series
    from advkit.report.plots import plot_figure, plot_png

    plot = Plot(title="m", xlabel="victim", ylabel="source", kind="heatmap",
                series=[Series("src a", ["v1", "v2"], [0.9, 0.2]),
                        Series("src b", ["v1", "v2"], [None, 0.5])])
    ax = plot_figure(plot).axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["20%", "50%", "90%", "n/a"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["src a", "src b"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["v1", "v2"]
    assert plot_png(plot).startswith(PNG)
    plot.series[1] = Series("src b", ["v1", "v3"], [0.1, 0.5])
    with pytest.raises(ReportFormatError, match="same x"):
        plot_figure(plot)
