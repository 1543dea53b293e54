"""`advkit serve-model` as a subprocess on 127.0.0.1 for the HttpTarget tests: a free port, a
bounded wait for /health, and always stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SRC = str(Path(__file__).resolve().parents[1] / "src")
START_TIMEOUT_S = 180  # importing torch and loading the model on a busy 2-core machine


def env(**extra) -> dict:
    """This process's environment (the test's history folder included) with advkit importable."""
    out = dict(os.environ)
    out["PYTHONPATH"] = SRC + (os.pathsep + out["PYTHONPATH"] if out.get("PYTHONPATH") else "")
    out.update(extra)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def advkit(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "advkit", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


class Server:
    def __init__(self, model: Path, *options, log: Path, environ: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = (environ or {}).get("SERVE_KEY")
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "advkit", "serve-model", str(model), "--port", str(self.port),
             "--trust-pickle", *map(str, options)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env(**(environ or {})))
        self.log = log

    def wait(self) -> Server:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve-model exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        raise AssertionError(f"serve-model not up in {START_TIMEOUT_S} s: "
                             f"{self.log.read_text()[-2000:]}")

    def stats(self) -> dict:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return httpx.get(self.url + "/stats", headers=headers, timeout=10).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@contextlib.contextmanager
def servers(*specs):
    """Start every (model, options, log, environ) server at once, wait for all, stop all."""
    started = []
    try:
        for model, options, log, environ in specs:
            started.append(Server(model, *options, log=log, environ=environ))
        yield [s.wait() for s in started]
    finally:
        for s in started:
            s.stop()


def save_forest(path: Path):
    """A small random forest on breast_cancer (scores, no gradients) saved with skops."""
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    from advkit.data import load

    data = load("breast_cancer")
    est = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0)
    est.fit(data.x_train.numpy(), data.y_train.numpy())
    sio.dump(est, path)
    return data, est
