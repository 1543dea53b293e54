"""The hostile-input corpus (advkit.testing.corpus) against the scan, load_model and `advkit scan`.

Every malicious file must be refused by every path (never "safe" or "requires-trust"), every
benign one must scan as not dangerous and load, no path may raise anything but advkit's own
errors, and the marker that every payload aims at must never appear.
"""

import collections
import warnings

import pytest

from advkit.cli.main import run
from advkit.errors import AdvkitError, InputContractError, UnsafeModelError
from advkit.models import load_model, scan_model_file
from advkit.testing.corpus import FORMATS, build_corpus

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(autouse=True)
def _quiet(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    marker = root / "marker"
    entries = build_corpus(root / "files", marker)
    assert not marker.exists()
    return entries, marker


def _load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(path, **kwargs)


def test_the_corpus_is_large_enough(corpus):
    entries, _ = corpus
    malicious = [e for e in entries if e.expected == "malicious"]
    assert len(malicious) >= 100
    benign = collections.Counter(e.format for e in entries if e.expected == "benign")
    assert set(benign) == set(FORMATS) and min(benign.values()) >= 20, benign
    assert {e.format for e in malicious} == set(FORMATS)
    assert len({e.path for e in entries}) == len(entries)


def test_every_malicious_file_is_refused_by_every_path(corpus, capsys):
    entries, marker = corpus
    failures = []
    for e in (e for e in entries if e.expected == "malicious"):
        res = scan_model_file(e.path)
        if res.verdict not in ("dangerous", "unknown"):
            failures.append((e.name, "scan", res.verdict, res.issues))
            continue
        error = UnsafeModelError if res.verdict == "dangerous" else InputContractError
        for kwargs in ({}, {"trust_pickle": True}):
            try:
                _load(e.path, **kwargs)
                failures.append((e.name, kwargs, "loaded"))
            except error:
                pass
            except Exception as exc:  # noqa: BLE001 - reported below with the file's name
                failures.append((e.name, kwargs, type(exc).__name__, str(exc)[:200]))
        code = run(["scan", str(e.path)])
        capsys.readouterr()
        if code == 0:
            failures.append((e.name, "advkit scan exited 0"))
    assert not failures, failures
    assert not marker.exists()


def test_every_benign_file_scans_clean_and_loads(corpus):
    entries, marker = corpus
    failures = []
    for e in (e for e in entries if e.expected == "benign"):
        res = scan_model_file(e.path)
        if res.verdict not in ("safe", "requires-trust"):
            failures.append((e.name, e.format, res.verdict, res.dangerous, res.issues))
            continue
        try:
            loaded = _load(e.path, trust_pickle=res.verdict == "requires-trust")
        except AdvkitError as exc:
            failures.append((e.name, e.format, type(exc).__name__, str(exc)[:200]))
            continue
        if loaded.model is None:
            failures.append((e.name, e.format, "no model"))
    assert not failures, failures
    assert not marker.exists()
