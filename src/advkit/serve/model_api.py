"""A model served as a prediction API (``advkit serve-model``; FastAPI + uvicorn, the ``serve``
extra): what ``advkit.targets.http.HttpTarget`` queries.

- ``POST /predict`` ``{"inputs": [[...], ...]}`` answers ``{"probabilities": [[...], ...]}`` (or
  ``{"labels": [...]}`` when serving labels only); rounded scores on request;
- ``GET /health`` answers ``{"status": "ok"}``; ``GET /stats`` the rows and requests answered (and
  how many distinct rows, and the faults injected): what the tests count queries with.

Bounded: the request body (``max_body_bytes``) and the rows of a request (``max_rows``); inputs
are checked for shape and finite values. With an API key, ``/predict`` and ``/stats`` need
``Authorization: Bearer KEY`` (compared in constant time). Faults for testing clients, drawn from
``seed`` in the order requests arrive: a dropped connection (the answer cut off before its end),
a 429 with ``Retry-After``, and added latency. A request whose client went away during the
latency is not answered (nor counted).
"""

import asyncio
import hashlib
import hmac
import json
import math
import random
import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from advkit.errors import InvalidParameterError, check_range
from advkit.targets.base import Target


@dataclass
class ServeOptions:
    labels_only: bool = False
    round: int | None = None
    api_key: str | None = None
    drop_rate: float = 0.0
    rate_429: float = 0.0
    retry_after_s: int = 1
    latency_ms: float = 0.0
    seed: int = 0
    max_body_bytes: int = 8 << 20
    max_rows: int = 1024

    def __post_init__(self):
        for name in ("drop_rate", "rate_429"):
            check_range(name, getattr(self, name), lo=0, hi=1)
        check_range("latency_ms", self.latency_ms, lo=0, hi=600_000)
        check_range("retry_after_s", self.retry_after_s, lo=0, hi=3600, kind=int)
        check_range("max_body_bytes", self.max_body_bytes, lo=1, kind=int)
        check_range("max_rows", self.max_rows, lo=1, kind=int)
        if self.round is not None:
            check_range("round", self.round, lo=0, hi=12, kind=int)
            if self.labels_only:
                raise InvalidParameterError("round", self.round, "no rounding with labels only")


@dataclass
class Stats:
    rows: int = 0
    requests: int = 0
    dropped: int = 0
    throttled: int = 0
    in_flight: int = 0
    digests: set = field(default_factory=set)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "distinct_rows": len(self.digests), "requests": self.requests,
                "dropped": self.dropped, "throttled": self.throttled, "in_flight": self.in_flight}


class _Refusal(Exception):
    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail


def _inputs(raw: bytes, target: Target, opts: ServeOptions) -> torch.Tensor:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _Refusal(400, "the body is not JSON (or nested too deep)") from None
    rows = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(rows, list) or not rows:
        raise _Refusal(422, 'expected {"inputs": [[...], ...]} with at least one row')
    if len(rows) > opts.max_rows:
        raise _Refusal(413, f"at most {opts.max_rows} rows per request")
    shape = target.contract.shape
    try:
        x = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise _Refusal(422, "inputs must be rows of numbers") from None
    d = math.prod(shape)
    if x.ndim < 2 or x.shape[0] != len(rows) or x[0].size != d:
        raise _Refusal(422, f"each input must hold {d} numbers (shape {list(shape)})")
    if not np.isfinite(x).all():
        raise _Refusal(422, "inputs must be finite")
    return torch.from_numpy(x.reshape((len(rows), *shape)))


def _answer(x: torch.Tensor, target: Target, opts: ServeOptions) -> dict:
    with torch.no_grad():
        s = target.predict_scores(x, check=False)
    caps = target.capabilities
    p = torch.softmax(s, 1) if caps.logits else s
    if opts.labels_only or not (caps.logits or caps.probabilities):
        return {"labels": p.argmax(1).tolist()}
    if opts.round is not None:
        p = torch.round(p, decimals=opts.round)
    return {"probabilities": p.to(torch.float32).tolist()}


async def _client_left(request, seconds: float) -> bool:
    """Wait ``seconds`` (the added latency) listening to the connection: True when the client
    went away meanwhile. (Listening resumes reading the socket, which uvicorn pauses once a
    request's body is in: a sleep would not notice a client killed meanwhile.)"""
    import anyio

    with anyio.move_on_after(seconds):
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return True
            await asyncio.sleep(0)
    return False


def build_app(target: Target, opts: ServeOptions):
    """The FastAPI application serving ``target`` with ``opts``; its ``state.stats`` counts."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    class Dropped(Response):
        """An answer started and cut off: the connection closes before its end, what a client
        sees when a connection drops (httpx: RemoteProtocolError)."""

        async def __call__(self, scope, receive, send) -> None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", b"4096")]})
            await send({"type": "http.response.body", "body": b'{"probabilities": [[',
                        "more_body": True})
            # returning with the body incomplete makes uvicorn close the connection

    app = FastAPI(title="advkit serve-model", docs_url=None, redoc_url=None, openapi_url=None)
    stats, lock, rng = Stats(), threading.Lock(), random.Random(opts.seed)
    model_lock = asyncio.Lock()
    app.state.stats = stats

    def authorized(request: Request) -> bool:
        if opts.api_key is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {opts.api_key}".encode())

    def refuse(status: int, detail: str, headers=None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/stats")
    async def get_stats(request: Request):
        if not authorized(request):
            return refuse(401, "missing or wrong API key")
        return stats.as_dict()

    @app.post("/predict")
    async def predict(request: Request):
        if not authorized(request):
            return refuse(401, "missing or wrong API key")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > opts.max_body_bytes):
            return refuse(413, f"the body may hold at most {opts.max_body_bytes} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > opts.max_body_bytes:
                return refuse(413, f"the body may hold at most {opts.max_body_bytes} bytes")
        with lock:
            drop, throttle = rng.random() < opts.drop_rate, rng.random() < opts.rate_429
        if drop:
            with lock:
                stats.dropped += 1
            return Dropped()
        if throttle:
            with lock:
                stats.throttled += 1
            return refuse(429, "too many requests", {"Retry-After": str(opts.retry_after_s)})
        try:
            x = _inputs(bytes(raw), target, opts)
        except _Refusal as exc:
            return refuse(exc.status, exc.detail)
        with lock:
            stats.in_flight += 1
        try:
            if opts.latency_ms and await _client_left(request, opts.latency_ms / 1000):
                return refuse(499, "client closed the request")  # not answered, not counted
            async with model_lock:
                out = await run_in_threadpool(_answer, x, target, opts)
            with lock:
                stats.rows += x.shape[0]
                stats.requests += 1
                stats.digests.update(hashlib.sha256(r.numpy().tobytes()).hexdigest()
                                     for r in x.reshape(x.shape[0], -1))
            return out
        finally:
            with lock:
                stats.in_flight -= 1

    return app


def serve(target: Target, opts: ServeOptions, *, host: str, port: int) -> None:
    """Serve ``target`` until interrupted (uvicorn)."""
    import logging

    import uvicorn

    class _NoCutOffNoise(logging.Filter):  # the dropped answers are deliberate
        def filter(self, record: logging.LogRecord) -> bool:
            return "without completing response" not in record.getMessage()

    logging.getLogger("uvicorn.error").addFilter(_NoCutOffNoise())
    uvicorn.run(build_app(target, opts), host=host, port=port, log_level="warning",
                access_log=False)
