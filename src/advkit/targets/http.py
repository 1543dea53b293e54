"""``HttpTarget``: a model behind a prediction API, queried as an attacker would (httpx).

Each input row is sent as JSON (``{"inputs": [[...], ...]}`` by default; ``inputs_field`` and
``output_field`` map other APIs) in requests of at most ``max_batch`` rows, at most ``concurrency``
at a time and ``rate_limit`` per second. Connection errors, 5xx and 429 answers are retried with
exponential backoff and jitter (a 429's ``Retry-After`` is honoured, capped at ``max_wait_s``).

Every answer is cached by the SHA-256 of the row's exact float32 bytes, so an identical input is
never paid for twice, and appended to the JSONL query log (``advkit.targets.query_log``) when one
is given: an interrupted audit re-reads it and sends no answered row again, and ``offline=True``
replays an audit from it alone. ``queries`` (the base's count, which the budget caps) counts every
row asked; ``sent`` the rows the API answered, ``cached`` those answered from the cache or log.

The API key (``api_key_env`` or ``api_key_file``) is sent as a header and kept out of the
target's repr, its errors, the query log and the report.
"""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import torch

from advkit.errors import (
    AdvkitWarning,
    InvalidParameterError,
    ModelBehaviorError,
    RemoteTargetError,
    check_choice,
    check_range,
)
from advkit.targets.base import Capabilities, Target
from advkit.targets.query_log import QueryLog, check_answer, row_digests

OUTPUTS = ("probabilities", "labels")
MAX_RESPONSE_BYTES = 32 << 20


def public_url(url: str) -> str:
    """The URL without user:password and query string (where keys sometimes hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _dig(body, path: str):
    for key in path.split("."):
        if not isinstance(body, dict) or key not in body:
            return None
        body = body[key]
    return body


def _put(body: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return body


@dataclass(eq=False)
class HttpTarget(Target):
    """A classifier behind a JSON prediction API (see the module docstring)."""

    url: str = ""
    output: str = "probabilities"
    inputs_field: str = "inputs"
    output_field: str | None = None  # default: "probabilities" or "labels", as ``output``
    extra_body: dict = field(default_factory=dict)
    max_batch: int = 64
    api_key_env: str | None = None
    api_key_file: str | None = None
    api_key_header: str = "Authorization"
    api_key_prefix: str = "Bearer "
    timeout_s: float = 30.0
    retries: int = 6
    backoff_s: float = 0.1
    max_wait_s: float = 30.0
    rate_limit: float | None = None  # requests per second
    concurrency: int = 1
    query_log: str | None = None
    offline: bool = False
    price_per_query: float | None = None
    seed: int = 0
    transport: object = field(default=None, repr=False)  # an httpx transport (default: network)
    sent: int = field(default=0, init=False)
    cached: int = field(default=0, init=False)
    requests: int = field(default=0, init=False)
    retried: int = field(default=0, init=False)
    _key: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        parts = urlsplit(self.url) if isinstance(self.url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidParameterError("url", public_url(str(self.url)),
                                        "an http:// or https:// URL of the prediction endpoint")
        check_choice("output", self.output, OUTPUTS)
        for name in ("inputs_field", "api_key_header"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidParameterError(name, getattr(self, name), "a non-empty string")
        self.output_field = self.output_field or self.output
        check_range("max_batch", self.max_batch, lo=1, kind=int)
        check_range("concurrency", self.concurrency, lo=1, hi=64, kind=int)
        check_range("retries", self.retries, lo=0, hi=100, kind=int)
        check_range("timeout_s", self.timeout_s, lo=0, lo_open=True)
        check_range("backoff_s", self.backoff_s, lo=0)
        check_range("max_wait_s", self.max_wait_s, lo=0)
        if self.rate_limit is not None:
            check_range("rate_limit", self.rate_limit, lo=0, lo_open=True)
        if self.price_per_query is not None:
            check_range("price_per_query", self.price_per_query, lo=0)
        self._key = self._read_key()
        self._log = None
        self._answers: dict[str, object] = {}
        if self.query_log is not None:
            self._log = QueryLog(self.query_log, output=self.output,
                                 n_classes=self.contract.n_classes, shape=self.contract.shape)
            self._answers = self._log.read()
        elif self.offline:
            raise InvalidParameterError("offline", True, "a query_log to answer from")
        self.from_log = len(self._answers)
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._next_start = 0.0
        self._client = None
        self._pool = None

    # -- what it declares --------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(probabilities=self.output == "probabilities", labels=True)

    @property
    def model_name(self) -> str:
        return f"the API at {public_url(self.url)}"

    def describe(self) -> dict:
        """What the report says about the API (no key, no query string)."""
        return {"url": public_url(self.url), "output": self.output, "max_batch": self.max_batch,
                "query_log": self.query_log, "offline": self.offline,
                "api_key": "from env" if self.api_key_env else
                "from file" if self.api_key_file else "none"}

    def accounting(self) -> dict:
        """Exact query accounting of this run: rows asked (``queries``), paid for (``sent``),
        answered from the cache or query log (``cached``); HTTP requests and retries."""
        out = {"queries": self.queries, "sent": self.sent, "cached": self.cached,
               "requests": self.requests, "retries": self.retried,
               "logged_before_run": self.from_log, "budget": self.budget}
        if self.price_per_query is not None:
            out["price_per_query"] = self.price_per_query
            out["cost"] = round(self.sent * self.price_per_query, 6)
        return out

    def announce_cost(self) -> str:
        """The cost estimate said before a run (an AdvkitWarning): the budget × the price."""
        if self.offline:
            text = f"offline: every answer comes from the query log {self.query_log} (no cost)"
        elif self.budget is None:
            text = (f"querying {public_url(self.url)} with no query budget: the number of paid "
                    "queries is not bounded; set model.budget to cap it")
        else:
            cost = ("" if self.price_per_query is None else
                    f", at {self.price_per_query:g} per query at most "
                    f"{self.budget * self.price_per_query:.2f}")
            text = (f"querying {public_url(self.url)}: at most {self.budget} queries{cost} "
                    f"({self.from_log} answers already in the query log are free)")
        warnings.warn(text, AdvkitWarning, stacklevel=2)
        return text

    # -- the key -------------------------------------------------------------------------------
    def _read_key(self) -> str | None:
        import os

        if self.api_key_env is not None and self.api_key_file is not None:
            raise InvalidParameterError("api_key_env", self.api_key_env,
                                        "either api_key_env or api_key_file, not both")
        if self.api_key_env is not None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise RemoteTargetError(f"the API key variable {self.api_key_env} is not set or "
                                        f"empty; fix: export {self.api_key_env}=<your key>")
            return key.strip()
        if self.api_key_file is not None:
            p = Path(self.api_key_file)
            try:
                with p.open("rb") as f:  # a key, not a whole file: read its start only
                    key = f.read(4096).decode("utf-8").strip() if p.is_file() else ""
            except (OSError, UnicodeDecodeError):
                key = ""
            if not key:
                raise RemoteTargetError(f"the API key file {str(p)!r} is missing, unreadable or "
                                        "empty; fix: write the key (one line) into it")
            return key
        return None

    # -- forward -------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.detach().to("cpu", torch.float32).reshape(x.shape[0], -1).numpy()
        rows = np.ascontiguousarray(rows)
        digests = row_digests(rows)
        missing: dict[str, int] = {}
        for i, d in enumerate(digests):
            if d not in self._answers and d not in missing:
                missing[d] = i
        self.cached += len(digests) - len(missing)
        if missing:
            if self.offline:
                raise RemoteTargetError(
                    f"offline replay: the query log {self.query_log} has no answer for "
                    f"{len(missing)} of {len(digests)} inputs (first digest "
                    f"{next(iter(missing))[:16]}); fix: run the audit online once with this "
                    "query_log, or remove offline: true")
            todo = list(missing.items())
            chunks = [todo[i:i + self.max_batch] for i in range(0, len(todo), self.max_batch)]
            if self.concurrency > 1 and len(chunks) > 1:
                list(self._executor().map(lambda c: self._ask(c, rows), chunks))
            else:
                for c in chunks:
                    self._ask(c, rows)
        return self._assemble(digests, x)

    def _assemble(self, digests: list[str], x: torch.Tensor) -> torch.Tensor:
        k = self.contract.n_classes
        if self.output == "labels":
            labels = torch.tensor([self._answers[d] for d in digests], dtype=torch.int64)
            out = torch.nn.functional.one_hot(labels, k).to(torch.float32)
        else:
            out = torch.tensor([self._answers[d] for d in digests], dtype=torch.float32)
        return out.reshape(len(digests), k).to(x.device)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency)
        return self._pool

    def _http(self):
        if self._client is None:
            import httpx

            headers = {"content-type": "application/json"}
            if self._key is not None:
                headers[self.api_key_header] = self.api_key_prefix + self._key
            self._client = httpx.Client(timeout=self.timeout_s, headers=headers,
                                        limits=httpx.Limits(max_connections=self.concurrency),
                                        transport=self.transport)
        return self._client

    def _ask(self, chunk: list[tuple[str, int]], rows: np.ndarray) -> None:
        """Send one request for ``chunk`` (digest, row index) with retries; cache and log the
        answers."""
        body = _put(json.loads(json.dumps(self.extra_body)), self.inputs_field,
                    [rows[i].tolist() for _, i in chunk])
        payload = json.dumps(body).encode()
        started = time.monotonic()
        answers = self._post(payload, len(chunk))
        ms = (time.monotonic() - started) * 1e3
        entries = [(d, a, ms) for (d, _), a in zip(chunk, answers, strict=True)]
        with self._lock:
            self.sent += len(chunk)
            if self._log is not None:
                self._log.append(entries)
            else:
                self._answers.update((d, a) for d, a, _ in entries)

    def _wait_rate(self) -> None:
        if self.rate_limit is None:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.rate_limit
        if start > now:
            time.sleep(start - now)

    def _post(self, payload: bytes, n: int) -> list:
        import httpx

        where = public_url(self.url)
        last = ""
        for attempt in range(self.retries + 1):
            self._wait_rate()
            with self._lock:
                self.requests += 1
                self.retried += attempt > 0
            retry_after = None
            try:
                with self._http().stream("POST", self.url, content=payload) as r:
                    status = r.status_code
                    if status < 400:
                        return self._parse(self._read(r), n)
                    if status == 429 or status >= 500:
                        last = f"HTTP {status}"
                        retry_after = _retry_after(r.headers.get("retry-after"))
                    else:
                        raise self._refused(status, self._read(r, limit=2000))
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout_s:g} s"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {str(exc)[:200]}"
            if attempt < self.retries:
                wait = min(self.max_wait_s, self.backoff_s * 2 ** attempt)
                with self._lock:
                    wait *= 0.5 + self._rng.random()  # jitter: retries do not arrive in step
                if retry_after is not None:
                    wait = max(wait, min(self.max_wait_s, retry_after))
                time.sleep(wait)
        raise RemoteTargetError(
            f"the API at {where} did not answer after {self.retries + 1} attempts (last: {last}); "
            "fix: check that it is running and reachable at this URL (advkit serve-model MODEL "
            "serves a model at http://127.0.0.1:8000/predict), correct model.url, or raise "
            "model.retries / model.timeout_s")

    def _refused(self, status: int, text: bytes) -> RemoteTargetError:
        why = text.decode("utf-8", "replace")[:300].replace(self._key or "\0", "<key>")
        fix = ("the API key was refused or is missing: set model.api_key_env (or api_key_file) to "
               "the right key" if status in (401, 403) else
               "check model.url and the request mapping (model.inputs_field, model.extra_body), "
               "and model.max_batch against the API's limits")
        return RemoteTargetError(f"the API at {public_url(self.url)} refused the request with "
                                 f"HTTP {status} ({why!r}); fix: {fix}")

    @staticmethod
    def _read(r, limit: int | None = None) -> bytes:
        """The answer's body, at most MAX_RESPONSE_BYTES (ModelBehaviorError beyond); with
        ``limit`` (an error text), its first ``limit`` bytes."""
        cap = MAX_RESPONSE_BYTES if limit is None else limit
        chunks, size = [], 0
        for chunk in r.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                if limit is not None:
                    break
                raise ModelBehaviorError(f"the API answered more than {cap >> 20} MiB for one "
                                         "request; lower model.max_batch or check the API")
        return b"".join(chunks)[:cap]

    def _parse(self, raw: bytes, n: int) -> list:
        where = f"the API at {public_url(self.url)}"
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelBehaviorError(f"{where} answered something that is not JSON "
                                     f"({raw[:80]!r}); check model.url") from None
        answers = _dig(body, self.output_field)
        if not isinstance(answers, list) or len(answers) != n:
            got = (f"{len(answers)} answers" if isinstance(answers, list) else
                   f"no list at {self.output_field!r}")
            raise ModelBehaviorError(
                f"{where} answered {got} for {n} inputs; fix: set model.output_field to where "
                f"the {self.output} come back in its JSON answer (and model.output)")
        k = self.contract.n_classes
        for i, a in enumerate(answers):
            if not check_answer(a, self.output, k):
                want = (f"a label in 0..{k - 1}" if self.output == "labels" else
                        f"{k} finite probabilities in [0, 1]")
                raise ModelBehaviorError(f"{where} answered {json.dumps(a)[:100]} for input {i}; "
                                         f"expected {want} (check model.n_classes and "
                                         "model.output)")
        return answers

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        if self._log is not None:
            self._log.close()


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time()) if when is not None else None
