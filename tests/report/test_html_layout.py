"""Wide tables stay inside the page: each table sits in a horizontally scrolling wrapper and long
cells wrap (checked by eye at a 1,400 px viewport; here the markup and rules are pinned down)."""

import re

from advkit.audit.report import Report, Section, Table
from advkit.report.html import render_html


def test_wide_tables_scroll_inside_their_section():
    cols = [f"column {i}" for i in range(30)]
    rep = Report(manifest={"seed": 0, "command": "x" * 2000}, model={"name": "m"},
                 dataset={"name": "d"},
                 sections=[Section(title="wide", tables=[Table(columns=cols, rows=[cols])])])
    html = render_html(rep)
    css = html[html.index("<style>"):html.index("</style>")]
    assert re.search(r"\.scroll \{[^}]*overflow-x: auto", css)
    assert re.search(r"\btd \{[^}]*overflow-wrap: anywhere", css)
    assert re.search(r"table\.kv \{[^}]*table-layout: fixed", css)
    body = html[html.index("</header>"):]
    # every table (data and key/value tables of the run section) is inside a scrolling wrapper
    # or a fixed-layout key/value table
    assert body.count('<div class="scroll">\n<table>') == body.count("<table>")
    run = body[body.index('id="run"'):]
    assert run.index('<div class="scroll">') < run.index('<table class="kv">')


def test_the_threat_matrix_headline_is_the_figure_that_decided_the_verdict():
    from advkit.audit.report import Verdict
    from advkit.report.markdown import threat_matrix

    report = Report(manifest={}, model={}, dataset={})
    report.verdicts.append(Verdict(threat="privacy", status="vulnerable", rule={"text": "r"},
                                   figures=[{"text": "loss: weak", "judged": True,
                                             "vulnerable": False},
                                            {"text": "lira: strong", "judged": True,
                                             "vulnerable": True}]))
    report.verdicts.append(Verdict(threat="extraction", status="robust", rule={"text": "r"},
                                   figures=[{"text": "not judged", "judged": False},
                                            {"text": "judged, held", "judged": True,
                                             "vulnerable": False}]))
    _, rows = threat_matrix(report)
    assert [r[2] for r in rows] == ["lira: strong", "judged, held"]
