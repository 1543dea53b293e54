"""JSON, HTML and Markdown renderers on a small hand-built Report."""

from __future__ import annotations

import base64
import io
import json
import math
import re

import numpy as np
import pytest
from PIL import Image as PILImage

from advkit.audit.report import (
    SCHEMA_VERSION,
    Finding,
    Image,
    Plot,
    Report,
    ScenarioResult,
    Section,
    Series,
    Table,
)
from advkit.errors import AdvkitError
from advkit.evaluation.metrics import proportion_of
from advkit.report import (
    load_json,
    render_html,
    render_markdown,
    to_json,
    write_json,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
XSS = "<script>alert('x')</script>"


def fmt(p) -> str:
    return f"{p.value:.3f} [{p.lo:.3f}, {p.hi:.3f}] (n={p.n})"


def synthetic_report() -> Report:
    rng = np.random.default_rng(0)
    pgd_rob, pgd_asr = proportion_of(31, 100), proportion_of(62, 89)
    fgsm_rob = proportion_of(55, 100)
    scenarios = [
        ScenarioResult(id="pgd-linf-8", kind="evasion", attack="pgd",
                       params={"eps": 8 / 255, "steps": 40, "norm": "inf"},
                       metrics={"clean_accuracy": proportion_of(89, 100),
                                "robust_accuracy": pgd_rob, "attack_success_rate": pgd_asr,
                                "mean_distance": 0.0312345, "bad": float("nan")},
                       seconds=12.5),
        ScenarioResult(id="fgsm-linf-8|jpeg", kind="evasion", attack="fgsm",
                       params={"eps": 8 / 255, "note": "a|b"},
                       metrics={"robust_accuracy": fgsm_rob, "empty": proportion_of(0, 0)},
                       seconds=0.8, defense="jpeg(75)"),
    ]
    findings = [
        Finding(check="gradient_masking", severity="warning", metric="fgsm_minus_pgd", value=0.24,
                threshold=0.05, why="FGSM beats PGD: WARNTEXT", fix="check the gradients"),
        Finding(check="info_note", severity="info", metric="", value=None, threshold=None,
                why="INFOTEXT", fix=""),
        Finding(check="low_robustness", severity="critical", metric="robust_accuracy",
                value=0.31, threshold=0.5, why=f"CRITTEXT {XSS}", fix="adversarial training",
                scenario="pgd-linf-8"),
        Finding(check="eps_monotone", severity="info", metric="", value=None, threshold=None,
                why="robust accuracy falls with eps", fix="", passed=True),
    ]
    eps = [0.0, 2 / 255, 4 / 255, 8 / 255]
    props = [proportion_of(k, 100) for k in (89, 70, 52, 31)]
    plot = Plot(title="Robust accuracy vs eps", xlabel="eps", ylabel="robust accuracy",
                series=[Series("pgd", eps, [p.value for p in props], [p.lo for p in props],
                               [p.hi for p in props])], ylim=(0.0, 1.0))
    images = [Image(caption=f"{g} {i}", pixels=rng.random((8, 8)), group=g)
              for g in ("clean", "adversarial") for i in range(4)]
    section = Section(title="Evasion", text="PGD with 40 steps.\n\nSecond paragraph.",
                      tables=[Table(columns=["attack", "robust accuracy", "queries"],
                                    rows=[["pgd", pgd_rob, 4000], ["fgsm", fgsm_rob, None]],
                                    title="per attack")],
                      plots=[plot], images=images, image_columns=4)
    manifest = {"versions": {"advkit": "0.1.0", "torch": "2.13.0", "numpy": "2.0",
                             "python": "3.11"},
                "seed": 1234, "sha256": {"model": "ab" * 32, "data": "cd" * 32, "spec": "ef" * 32},
                "command": "advkit audit spec.yaml", "started": "2025-01-01T00:00:00Z",
                "finished": "2025-01-01T00:01:00Z", "duration": 60.0}
    return Report(manifest=manifest, model={"name": "small_cnn", "framework": "torch"},
                  dataset={"name": "digits", "shape": [1, 8, 8], "n_classes": 10},
                  scenarios=scenarios, findings=findings, sections=[section])


@pytest.fixture(scope="module")
def report() -> Report:
    return synthetic_report()


@pytest.fixture(scope="module")
def html(report) -> str:
    return render_html(report)


# ---------------------------------------------------------------- JSON

def test_json_schema_version_first_and_strict(report):
    text = to_json(report)
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))
    assert next(iter(doc)) == "schema_version"
    assert doc["schema_version"] == SCHEMA_VERSION
    assert text.startswith('{\n  "schema_version"')  # indent 2
    metrics = doc["scenarios"][0]["metrics"]
    assert metrics["bad"] is None  # NaN -> null
    assert doc["scenarios"][1]["metrics"]["empty"]["value"] is None  # n=0 proportion
    assert metrics["robust_accuracy"]["k"] == 31 and metrics["robust_accuracy"]["n"] == 100


def test_json_round_trip(report, tmp_path):
    path = write_json(report, tmp_path / "sub" / "report.json")
    doc = load_json(path)
    expected = json.loads(to_json(report))
    assert doc == expected
    assert doc["findings"][2]["why"] == f"CRITTEXT {XSS}"
    pixels = np.array(doc["sections"][0]["images"][0]["pixels"])
    np.testing.assert_allclose(pixels, report.sections[0].images[0].pixels)
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind


@pytest.mark.parametrize("doc, needle", [
    ({"title": "x"}, "no 'schema_version'"),
    ({"schema_version": "99.0"}, "'99.0'"),
    ({"schema_version": 1.0}, "1.0"),
    ([1, 2], "list"),
])
def test_load_json_refuses_bad_documents(tmp_path, doc, needle):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(AdvkitError, match=re.escape(needle)):
        load_json(path)


def test_load_json_refuses_non_json_and_missing(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text("{not json")
    with pytest.raises(AdvkitError, match="not valid JSON"):
        load_json(bad)
    with pytest.raises(AdvkitError, match="cannot read"):
        load_json(tmp_path / "missing.json")


# ---------------------------------------------------------------- HTML

def test_html_is_self_contained(html):
    refs = re.findall(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", html, flags=re.I)
    assert refs
    for ref in refs:
        assert ref.startswith(("data:image/png;base64,", "#")), ref[:60]
    assert not re.search(r"<(script|link|iframe|object|embed)\b", html, flags=re.I)
    assert "@import" not in html and "url(" not in html


def test_html_escapes_report_text(html):
    assert "<script>" not in html
    assert "CRITTEXT &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html


def test_html_images_are_valid_pngs(html):
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == 2  # one plot + one image grid
    for b64 in uris:
        png = base64.b64decode(b64, validate=True)
        assert png[:8] == PNG_MAGIC
        with PILImage.open(io.BytesIO(png)) as im:
            im.verify()
    grid = PILImage.open(io.BytesIO(base64.b64decode(uris[1])))
    assert grid.size[0] > 0 and grid.size[1] > 0


def test_html_layout_order_and_content(report, html):
    crit, warn, info = (html.index(t) for t in ("CRITTEXT", "WARNTEXT", "INFOTEXT"))
    assert crit < warn < info  # by severity, although the warning came first in the report
    order = [html.index(t) for t in ('id="findings"', 'id="summary"', 'id="section-1"',
                                     'id="run"')]
    assert order == sorted(order)
    for p in (report.scenarios[0].metrics["robust_accuracy"],
              report.scenarios[0].metrics["attack_success_rate"],
              report.scenarios[1].metrics["robust_accuracy"]):
        assert fmt(p) in html
    assert "ab" * 32 in html[html.index('id="run"'):]  # hashes in the manifest at the bottom
    assert "eps_monotone" in html  # passed check listed
    assert "Second paragraph." in html


# ---------------------------------------------------------------- Markdown

def test_markdown_summary(report):
    md = render_markdown(report)
    assert md.startswith(f"# {report.title}\n")
    assert "data:image" not in md and "<img" not in md
    for s in report.scenarios:
        for v in s.metrics.values():
            if hasattr(v, "lo") and v.n:
                assert fmt(v) in md
    assert "n/a (n=0)" in md
    assert md.index("[CRITICAL]") < md.index("[WARNING]") < md.index("[INFO]")
    assert md.index("CRITTEXT") < md.index("WARNTEXT")
    assert "seed: 1234" in md
    for h in ("ab", "cd", "ef"):
        assert h * 32 in md
    assert "small_cnn" in md and "digits" in md


def test_markdown_tables_keep_their_columns(report):
    md = render_markdown(report)
    rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(rows) == 4  # header, rule, two scenarios
    cells = [len(re.findall(r"(?<!\\)\|", ln)) for ln in rows]
    assert len(set(cells)) == 1, cells  # a '|' inside a value is escaped


# ---------------------------------------------------------------- write_report

def test_write_report(report, tmp_path):
    out = write_report(report, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json"]
    assert out["html"].read_text(encoding="utf-8") == render_html(report)
    assert load_json(out["json"])["schema_version"] == SCHEMA_VERSION
    assert out["markdown"] == render_markdown(report)


def test_fmt_number_significant_digits():
    from advkit.report.markdown import fmt_number

    assert fmt_number(0.0312345) == "0.03123"
    assert fmt_number(12.3456) == "12.35"
    assert fmt_number(7) == "7"
    assert fmt_number(None) == "–" and fmt_number(math.nan) == "n/a"


def test_empty_report_renders():
    empty = Report(manifest={}, model={}, dataset={})
    html = render_html(empty)
    assert "NOT ASSESSED" in html and "NO CHECK FAILED" in html and "badge passed" not in html
    assert 'id="summary"' not in html and "<img" not in html
    md = render_markdown(empty)
    assert "NOT ASSESSED" in md and "no check failed" in md and "## Scenarios" not in md
    assert json.loads(to_json(empty))["scenarios"] == []
