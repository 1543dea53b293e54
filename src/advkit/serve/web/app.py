"""``advkit serve``: the web demo and audit browser (FastAPI, jinja2 pages, a little plain JS).

Pages: ``/`` the playground, ``/audits`` the history (``/audits/ID/report`` opens a report,
``/compare?a=ID&b=ID`` two audits side by side), ``/run`` an audit started from the browser.
The JSON endpoints under ``/api`` do the work; a bad request is a 4xx with ``{"detail": message}``
(a page gets the message as HTML), never a stack trace.
"""


import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from advkit.errors import AdvkitError, WebRequestError
from advkit.serve.web import audits, playground, uploads
from advkit.serve.web.models import ModelTable
from advkit.serve.web.runs import Runs

log = logging.getLogger("advkit.serve")
TEMPLATES = Path(__file__).parent / "templates"
MAX_JSON_BYTES = 64 << 10


@dataclass
class WebOptions:
    history: Path | None = None  # None: $ADVKIT_HISTORY, else the user's history file
    runs_dir: Path = Path("advkit-runs")
    model_files: list[Path] = field(default_factory=list)
    max_upload_bytes: int = uploads.MAX_IMAGE_BYTES
    max_parallel_audits: int = 1
    scan_cache: bool = True


def _templates():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(str(TEMPLATES)),
                       autoescape=select_autoescape(["html"]), auto_reload=False)


def build_app(opts: WebOptions | None = None):
    """The FastAPI application; ``app.state`` holds its models, uploads and runs."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    opts = opts or WebOptions()
    env = _templates()
    models = ModelTable(opts.model_files, scan_cache=opts.scan_cache)
    ups = playground.Uploads()
    runs = Runs(opts.runs_dir, opts.history, max_parallel=opts.max_parallel_audits)
    compute = threading.Lock()  # one model computation at a time (torch uses every core)
    app = FastAPI(title="advkit serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.models, app.state.uploads, app.state.runs = models, ups, runs

    def page(name: str, status: int = 200, **ctx) -> HTMLResponse:
        html = env.get_template(name).render(**ctx)
        return HTMLResponse(html, status_code=status)

    def refuse(request: Request, status: int, detail: str):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": detail}, status_code=status)
        return page("error.html", status=status, status_code=status, detail=detail,
                    nav="")

    @app.exception_handler(WebRequestError)
    async def _web_error(request: Request, exc: WebRequestError):
        return refuse(request, exc.status, str(exc))

    @app.exception_handler(AdvkitError)
    async def _advkit_error(request: Request, exc: AdvkitError):
        return refuse(request, 422, f"{type(exc).__name__}: {exc}")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                          for e in exc.errors()[:5])
        return refuse(request, 422, f"malformed request ({where})")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return refuse(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("advkit serve: internal error on %s", request.url.path)
        return refuse(request, 500, "internal error (the server log has the details)")

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    async def json_body(request: Request) -> dict:
        raw = await uploads.read_body(request, MAX_JSON_BYTES)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise WebRequestError("the body is not JSON", 400) from None
        if not isinstance(body, dict):
            raise WebRequestError("expected a JSON object", 400)
        return body

    def locked(fn, *args):
        with compute:
            return fn(*args)

    # ------------------------------------------------------------ pages

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    async def playground_page():
        choices = [{"key": c.key, "label": c.label} for c in models.choices.values()]
        return page("playground.html", nav="playground", models=choices,
                    forms=playground.forms())

    @app.get("/audits", response_class=HTMLResponse)
    async def audits_page():
        return page("audits.html", nav="audits", rows=audits.rows(opts.history))

    @app.get("/audits/{audit_id}/report", response_class=HTMLResponse)
    async def report(audit_id: int):
        return HTMLResponse(audits.report_html(opts.history, audit_id))

    @app.get("/compare", response_class=HTMLResponse)
    async def compare_page(a: int, b: int, tolerance: float = 0.01):
        if not 0 <= tolerance <= 1:
            raise WebRequestError("tolerance must be in [0, 1]", 422)
        return page("compare.html", nav="audits", c=audits.comparison(opts.history, a, b,
                                                                       tolerance))

    @app.get("/run", response_class=HTMLResponse)
    async def run_page():
        from advkit.audit import presets

        latest = runs.latest()
        return page("run.html", nav="run", latest=latest.to_dict() if latest else None,
                    presets=[{"name": n, "about": presets.describe(n)} for n in presets.names()])

    # ------------------------------------------------------------ playground API

    @app.get("/api/samples")
    async def samples(model: str = "default"):
        def work():
            target, ds = models.load(model)
            c = target.contract
            return {"samples": playground.samples(ds), "n_classes": c.n_classes,
                    "class_names": list(c.class_names or [])}
        return await run_in_threadpool(locked, work)

    @app.post("/api/upload")
    async def upload(request: Request, model: str = "default", invert: bool = False):
        raw = await uploads.read_body(request, opts.max_upload_bytes)

        def work():
            target, _ = models.load(model)
            c = target.contract
            x = uploads.decode_image(raw, shape=c.shape, bounds=c.bounds, invert=invert)
            return {"token": ups.add(model, x), "src": playground.png(x, c.bounds),
                    "top5": playground.predict(target, x[None])}
        return await run_in_threadpool(locked, work)

    @app.post("/api/attack")
    async def attack(request: Request):
        body = await json_body(request)
        return await run_in_threadpool(locked, playground.run, body, models, ups)

    # ------------------------------------------------------------ runs API

    @app.post("/api/run")
    async def start_preset(request: Request):
        from advkit.audit import presets
        from advkit.audit.spec import load_spec

        body = await json_body(request)
        name, quick = body.get("preset"), bool(body.get("quick", True))
        if not isinstance(name, str) or name not in presets.names():
            raise WebRequestError(f"unknown preset; presets: {', '.join(presets.names())}", 422)
        members = presets.suite(name, quick=quick)
        if members is not None:
            raise WebRequestError(f"the preset {name} is a suite of {len(members)} audits "
                                  f"({', '.join(members)}); start them one at a time", 422)
        spec, sha = load_spec(presets.preset_path(name, quick=quick))
        run = runs.start(spec, sha, name=f"preset {name}" + (" (quick)" if quick else ""),
                         preset=name)
        return run.to_dict()

    @app.post("/api/run/spec")
    async def start_spec(request: Request):
        raw = await uploads.read_body(request, uploads.MAX_SPEC_BYTES)
        spec, sha = uploads.parse_spec_upload(raw)
        run = runs.start(spec, sha, name=f"uploaded spec: {spec.title[:60]}", spec_bytes=raw)
        return run.to_dict()

    @app.get("/api/run/{run_id}")
    async def run_state(run_id: str):
        return runs.get(run_id).to_dict()

    @app.get("/api/run/{run_id}/events")
    async def run_events(run_id: str, request: Request):
        run = runs.get(run_id)

        async def stream():
            sent = 0
            while True:
                lines = run.lines[sent:]
                for line in lines:
                    yield f"event: line\ndata: {json.dumps(line)}\n\n"
                sent += len(lines)
                if run.status != "running" and sent >= len(run.lines):
                    yield f"event: end\ndata: {json.dumps(run.to_dict())}\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    return app


def serve(opts: WebOptions, *, host: str, port: int) -> None:
    """Serve until interrupted (uvicorn)."""
    import uvicorn

    uvicorn.run(build_app(opts), host=host, port=port, log_level="warning", access_log=False)
