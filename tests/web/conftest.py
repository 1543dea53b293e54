"""Fixtures of the web app tests: one model cache per session (the default digits model is trained
once, about 15 s on 2 cores), an audit history and a runs folder per test."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("fastapi")


@pytest.fixture(scope="session")
def web_cache(tmp_path_factory):
    """ADVKIT_CACHE_DIR for the whole session (the web tests share the trained default model)."""
    path = tmp_path_factory.mktemp("web-cache")
    old = os.environ.get("ADVKIT_CACHE_DIR")
    os.environ["ADVKIT_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ADVKIT_CACHE_DIR", None)
    else:
        os.environ["ADVKIT_CACHE_DIR"] = old


@pytest.fixture
def web_opts(web_cache, tmp_path):
    from advkit.serve.web.app import WebOptions

    return WebOptions(history=tmp_path / "history.sqlite", runs_dir=tmp_path / "runs",
                      scan_cache=False)
