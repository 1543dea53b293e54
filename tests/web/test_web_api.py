"""advkit serve through FastAPI's TestClient: the JSON endpoints, the pages, and malformed input
(each a 4xx with a message, after which the server keeps serving)."""

from __future__ import annotations

import time

import pytest

from web_builders import huge_png_header, png_bytes, tiny_spec

pytest.importorskip("fastapi")


@pytest.fixture
def client(web_opts):
    from fastapi.testclient import TestClient

    from advkit.serve.web.app import build_app

    with TestClient(build_app(web_opts), raise_server_exceptions=False) as c:
        yield c


def _still_serving(client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    r = client.post("/api/upload?model=default", content=png_bytes())
    assert r.status_code == 200, r.text
    assert len(r.json()["top5"]) == 5


def test_every_registered_evasion_attack_and_transform_has_a_form(client):
    from advkit import registry
    from advkit.defenses.transforms.base import InputTransform

    html = client.get("/").text
    for name in registry.list("evasion"):
        assert f'<option value="{name}"' in html, name
    for e in registry.entries("defense"):
        if issubclass(e.cls, InputTransform):
            assert f'<option value="{e.name}"' in html, e.name


def test_fgsm_flips_a_digit_and_the_defense_answers(client):
    r = client.post("/api/attack", json={
        "model": "default", "sample": 0, "attack": "fgsm", "params": {"eps": "0.3"},
        "defense": "median-smoothing", "defense_params": {"kernel": "3"}})
    assert r.status_code == 200, r.text
    out = r.json()
    clean, adv = out["original"]["top5"][0], out["adversarial"]["top5"][0]
    assert clean["label"] == out["label"]  # the default model gets sample 0 right
    assert adv["label"] != clean["label"] and out["success"]
    assert out["perturbation"]["linf"] == pytest.approx(0.3, abs=1e-5)
    assert len(out["defended"]["top5"]) == 5
    assert "Goodfellow" in out["doc"]


def test_targeted_attack_reaches_its_class(client):
    r = client.post("/api/attack", json={"sample": 1, "attack": "pgd", "target": "3",
                                         "params": {"eps": "0.5", "steps": "20"}})
    assert r.status_code == 200, r.text
    assert r.json()["adversarial"]["top5"][0]["label"] == "3"


@pytest.mark.parametrize("body, status, words", [
    ({"attack": "no-such"}, 422, "unknown attack"),
    ({"attack": "pgd", "params": {"eps": "-1"}}, 422, "parameter 'eps'"),
    ({"attack": "fgsm", "sample": 99999}, 422, "sample must be"),
    ({"attack": "fgsm", "target": "10"}, 422, "target class"),
    ({"attack": "fgsm", "model": "../../etc"}, 404, "unknown model"),
    ({"attack": "fgsm", "upload": "nope"}, 404, "upload the image again"),
])
def test_bad_playground_requests_are_4xx_with_a_message(client, body, status, words):
    r = client.post("/api/attack", json=body)
    assert r.status_code == status and words in r.json()["detail"], r.text


@pytest.mark.parametrize("name, body, status", [
    ("truncated png", png_bytes((64, 64), 7)[:60], 422),
    ("20000 x 20000 png", huge_png_header(20_000), 413),
    ("not an image", b"%PDF-1.4 certainly not a picture", 415),
    ("oversized body", b"\x89PNG" + b"\0" * (4 << 20), 413),
    ("empty body", b"", 400),
])
def test_malformed_uploads_are_refused_and_the_server_keeps_serving(client, name, body, status):
    r = client.post("/api/upload?model=default", content=body)
    assert r.status_code == status, (name, r.text)
    assert r.json()["detail"] and "Traceback" not in r.text
    _still_serving(client)


def test_uploaded_png_is_predicted_and_attacked(client):
    r = client.post("/api/upload?model=default&invert=true", content=png_bytes((40, 40), 30))
    assert r.status_code == 200
    token = r.json()["token"]
    r = client.post("/api/attack", json={"upload": token, "attack": "fgsm",
                                         "params": {"eps": "0.2"}})
    assert r.status_code == 200, r.text
    assert r.json()["label"] is None and r.json()["perturbation"]["linf"] <= 0.2 + 1e-6


@pytest.mark.parametrize("spec, words", [
    ("seed: !!python/object/apply:os.system ['echo owned']\n", "uploaded spec"),
    ("title: x\ndataset: {name: digits}\nmodel: {path: /etc/passwd}\n"
     "attacks: [{name: fgsm, eps: [0.1]}]\n", "zoo models"),
    ("title: [unclosed\n", "uploaded spec"),
    ("attacks: 3\n", "uploaded spec"),
])
def test_bad_specs_are_refused_by_the_strict_validator(client, spec, words):
    r = client.post("/api/run/spec", content=spec.encode())
    assert r.status_code == 422 and words in r.json()["detail"], r.text
    assert not client.app.state.runs.runs  # nothing started
    _still_serving(client)


def test_a_suite_preset_is_refused_with_its_members_named(client):
    r = client.post("/api/run", json={"preset": "privacy", "quick": False})
    assert r.status_code == 422 and "privacy-digits, privacy-adult" in r.json()["detail"], r.text
    assert not client.app.state.runs.runs  # nothing started
    _still_serving(client)


@pytest.mark.parametrize("path", [
    "/audits/..%2F..%2Fetc%2Fpasswd/report",
    "/audits/../../../etc/passwd/report",
    "/audits/1/report/..%2F..%2F..%2Fetc%2Fpasswd",
    "/audits/%2e%2e/report",
    "/audits/999/report",
])
def test_report_paths_cannot_traverse(client, path):
    r = client.get(path)
    assert 400 <= r.status_code < 500 and "root:" not in r.text, (path, r.status_code)
    _still_serving(client)


def test_one_audit_at_a_time_and_the_run_lands_in_the_history(client, web_opts):
    r = client.post("/api/run/spec", content=tiny_spec().encode())
    assert r.status_code == 200, r.text
    run_id = r.json()["id"]
    busy = client.post("/api/run", json={"preset": "evasion-defense", "quick": True})
    assert busy.status_code == 409 and "already running" in busy.json()["detail"]
    deadline = time.time() + 120
    while client.get(f"/api/run/{run_id}").json()["status"] == "running":
        assert time.time() < deadline
        time.sleep(0.5)
    state = client.get(f"/api/run/{run_id}").json()
    assert state["status"] == "done", state
    assert any("done in" in line for line in state["lines"])
    events = client.get(f"/api/run/{run_id}/events").text
    assert "event: end" in events and '"status": "done"' in events
    page = client.get("/audits").text
    assert f'href="/audits/{state["audit_id"]}/report"' in page and "web test: digits" in page
    report = client.get(f"/audits/{state['audit_id']}/report")
    assert report.status_code == 200 and "<html" in report.text.lower()
    # a second audit of the same spec (read back from its store) to compare with the first
    r2 = client.post("/api/run/spec", content=tiny_spec().encode()).json()
    while client.get(f"/api/run/{r2['id']}").json()["status"] == "running":
        time.sleep(0.3)
    b = client.get(f"/api/run/{r2['id']}").json()["audit_id"]
    cmp = client.get(f"/compare?a={state['audit_id']}&b={b}")
    assert cmp.status_code == 200 and "+0.000" in cmp.text and 'id="changes"' in cmp.text
