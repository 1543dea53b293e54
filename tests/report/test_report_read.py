"""Report.from_dict reads a report back (issue 12 item 3): the document round-trips, and the
read-back report renders the same HTML and Markdown as the original."""

from __future__ import annotations

import json

import pytest

from advkit.audit.report import Report
from advkit.cli.main import run
from advkit.errors import ReportFormatError
from advkit.report import render_html, render_markdown
from advkit.report.json import load_json, report_dict


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


def test_a_written_report_reads_back_and_renders_the_same(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("dataset: digits\nmodel: {zoo: mlp, epochs: 2}\nevaluation: {n_samples: 30}\n"
                    "attacks: [{name: fgsm, eps: [0, 0.1]}, {name: deepfool, norm: l2}]\n"
                    "defenses: [{name: bit-depth, params: {bits: 3}}]\n")
    assert run(["audit", str(spec), "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out  # the audit's own Markdown summary
    doc = load_json(tmp_path / "r" / "report.json")
    back = Report.from_dict(doc)
    assert json.loads(json.dumps(report_dict(back))) == doc
    # the same summary from the stored document as the audit printed from its own report
    assert render_markdown(back).strip() in printed
    html = render_html(back)
    assert "Defenses: before and after" in html and "Verdict: evasion" in html
    clean = back.scenario("fgsm/Linf/eps=0").metrics["clean_accuracy"]
    assert clean.n == 30 and 0 <= clean.lo <= clean.value <= clean.hi <= 1


def test_a_document_that_is_not_a_report_is_a_typed_error():
    with pytest.raises(ReportFormatError, match="does not describe an advkit report"):
        Report.from_dict({"title": "x", "scenarios": [{"id": "a"}]})
