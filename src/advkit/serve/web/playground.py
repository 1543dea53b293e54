"""The playground: one input, one evasion attack, one input-transform defense, shown side by side.

The forms are generated from the registry (``advkit.registry``) and each class's declared parameter
constraints (``advkit.params``), so every registered evasion attack and every registered input
transform appears with its valid ranges. Values from the browser are converted by the declared kind
and then built through ``registry.create``, which checks them against the declarations: a bad value
is the same one-format message ``advkit describe`` and the spec validator give (a 422 here).

The attack runs against the undefended model (the defense is judged on the attack's output, as a
non-adaptive defense evaluation; the audit's defenses family runs the adaptive attacks).
"""

from __future__ import annotations

import base64
import inspect
import io
import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from advkit.errors import AdvkitError, WebRequestError

SIMPLE = {"int", "float", "bool", "str", "norm"}
IMAGE_PX = 160  # side of the pictures the page shows
MAX_UPLOADS = 64  # decoded uploads kept in memory (oldest dropped first)


# ---------------------------------------------------------------- forms from declarations


def _field(row: dict[str, Any]) -> dict[str, Any] | None:
    """One form field from a ``params.describe`` row; None for kinds a form cannot hold
    (arrays, pairs, transform lists): those keep their defaults."""
    kinds = [k.strip() for k in str(row.get("type", "")).split("|")]
    base = [k for k in kinds if k != "None"]
    if len(base) != 1 or base[0] not in SIMPLE:
        return None
    kind = base[0]
    out = {"name": row["name"], "kind": kind, "default": row["default"], "doc": row.get("doc", ""),
           "allowed": row.get("allowed") or "", "optional": bool(row.get("optional")),
           "min": None, "max": None, "choices": None}
    for c in row.get("constraints") or []:
        if c.get("kind") == "range":
            for end in ("min", "max"):
                v = c.get(end)
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    out[end] = v
        elif c.get("kind") == "choice":
            out["choices"] = [str(x) for x in c.get("choices") or []]
    if kind == "norm":
        out["choices"] = out["choices"] or ["inf", "2", "1"]
        d = row["default"]
        out["default"] = "inf" if d in ("inf", math.inf) else str(int(d)) if isinstance(
            d, int | float) else str(d)
    elif kind == "str" and out["choices"] is None:
        out["kind"] = "text"
    return out


def _doc(cls) -> str:
    """The attack's explanation: its module's docstring (the paper and the idea), else its own."""
    mod = inspect.getmodule(cls)
    text = inspect.cleandoc(mod.__doc__) if mod is not None and mod.__doc__ else ""
    text = text or inspect.getdoc(cls) or ""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    return " ".join(paragraphs[:2])


def forms() -> dict[str, list[dict[str, Any]]]:
    """``attacks`` (every registered evasion attack) and ``defenses`` (every registered input
    transform), each ``{name, summary, doc, fields}``."""
    from advkit import params, registry
    from advkit.defenses.transforms.base import InputTransform

    def entry(e):
        fields = [f for f in (_field(r) for r in params.describe(e.cls)) if f is not None]
        return {"name": e.name, "summary": e.summary, "doc": _doc(e.cls), "fields": fields}

    attacks = [entry(e) for e in registry.entries("evasion")]
    defenses = [entry(e) for e in registry.entries("defense")
                if isinstance(e.cls, type) and issubclass(e.cls, InputTransform)]
    return {"attacks": attacks, "defenses": defenses}


def _value(f: dict[str, Any], raw: Any) -> Any:
    """A browser's value (a string or JSON scalar) as the declared kind; a value that does not
    convert is passed on unchanged, so the declaration check names it."""
    if raw is None or raw == "":
        return None if f["optional"] else f["default"]
    kind = f["kind"]
    try:
        if kind == "bool":
            return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "on", "yes")
        if kind == "int":
            v = float(raw)
            return int(v) if v.is_integer() else v
        if kind == "float":
            return float(raw)
    except (TypeError, ValueError):
        return raw
    return str(raw)


def build(name: Any, values: Any, family: str):
    """``registry.create(name, **values)`` for a name among the page's forms; 422 on a bad value."""
    from advkit import registry

    table = {f["name"]: f for f in forms()["attacks" if family == "evasion" else "defenses"]}
    entry = table.get(name) if isinstance(name, str) else None
    if entry is None:
        raise WebRequestError(f"unknown {'attack' if family == 'evasion' else 'defense'}; pick "
                              f"one of: {', '.join(table)}", 422)
    values = values if isinstance(values, dict) else {}
    params = {}
    for f in entry["fields"]:
        if f["name"] in values:
            params[f["name"]] = _value(f, values[f["name"]])
    try:
        return registry.create(name, **params)
    except AdvkitError as exc:
        raise WebRequestError(str(exc), 422) from None


# ---------------------------------------------------------------- pictures and predictions


def png(x: torch.Tensor, bounds: tuple[float, float], px: int = IMAGE_PX) -> str:
    """One (C, H, W) input as a PNG data URI, scaled up with nearest-neighbour pixels."""
    from PIL import Image

    lo, hi = bounds
    u = ((x.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    arr = (u * 255).round().to(torch.uint8)
    c, h, w = arr.shape
    if c == 1:
        im = Image.frombytes("L", (w, h), arr[0].contiguous().numpy().tobytes())
    else:
        im = Image.frombytes("RGB", (w, h), arr[:3].permute(1, 2, 0).contiguous().numpy().tobytes())
    scale = max(1, px // max(h, w))
    im = im.resize((w * scale, h * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def amplified(delta: torch.Tensor) -> torch.Tensor:
    """The perturbation for the eye: 0.5 is no change, 0 and 1 the largest change either way."""
    m = float(delta.abs().max())
    return 0.5 + delta / (2 * m) if m > 0 else torch.full_like(delta, 0.5)


def top5(scores: torch.Tensor, logits: bool, names) -> list[dict[str, Any]]:
    p = torch.softmax(scores.float(), -1) if logits else scores.float()
    vals, idx = p.topk(min(5, p.shape[-1]))
    return [{"label": names[i] if names else str(i), "index": int(i), "p": float(v)}
            for v, i in zip(vals.tolist(), idx.tolist(), strict=True)]


def predict(target, x: torch.Tensor) -> list[dict[str, Any]]:
    with torch.no_grad():
        s = target.predict_scores(x, check=False)[0]
    return top5(s, target.capabilities.logits, target.contract.class_names)


def samples(ds, n: int = 40) -> list[dict[str, Any]]:
    """The first ``n`` test points as a clickable grid."""
    n = min(n, ds.x_test.shape[0])
    names = ds.info.class_names
    return [{"index": i, "label": names[int(ds.y_test[i])] if names else str(int(ds.y_test[i])),
             "src": png(ds.x_test[i], ds.info.bounds, px=48)} for i in range(n)]


# ---------------------------------------------------------------- one playground run


@dataclass
class Uploads:
    """Decoded uploads by token (in memory, the newest ``MAX_UPLOADS``)."""

    def __post_init__(self):
        self.items: dict[str, tuple[str, torch.Tensor]] = {}

    def add(self, model_key: str, x: torch.Tensor) -> str:
        import secrets

        token = secrets.token_hex(8)
        self.items[token] = (model_key, x)
        while len(self.items) > MAX_UPLOADS:
            self.items.pop(next(iter(self.items)))
        return token

    def get(self, token: Any, model_key: str) -> torch.Tensor:
        item = self.items.get(token) if isinstance(token, str) else None
        if item is None or item[0] != model_key:
            raise WebRequestError("that upload is no longer here (or was for another model); "
                                  "upload the image again", 404)
        return item[1]


def _plain(v: Any) -> Any:
    """A parameter value as JSON can hold it (inf as "inf", anything else unusual as text)."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v if isinstance(v, bool | int | float | str) or v is None else repr(v)


def _int(v: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise WebRequestError(f"{name} must be an integer in [{lo}, {hi}]", 422)
    try:
        i = int(v)
    except ValueError:
        raise WebRequestError(f"{name} must be an integer in [{lo}, {hi}]", 422) from None
    if not lo <= i <= hi:
        raise WebRequestError(f"{name} must be an integer in [{lo}, {hi}]; got {i}", 422)
    return i


def run(req: dict[str, Any], models, uploads: Uploads) -> dict[str, Any]:
    """One playground request: ``{model, sample | upload, attack, params, target, defense,
    defense_params, seed}`` → pictures, norms and top-5 predictions of each stage."""
    from advkit.goals import Targeted, Untargeted
    from advkit.threats import lp_norm

    if not isinstance(req, dict):
        raise WebRequestError("expected a JSON object", 400)
    key = req.get("model", "default")
    target, ds = models.load(key)
    c = target.contract
    if req.get("upload") not in (None, ""):
        x = uploads.get(req["upload"], key)[None]
        y = None
    else:
        i = _int(req.get("sample", 0), "sample", 0, ds.x_test.shape[0] - 1)
        x, y = ds.x_test[i:i + 1], ds.y_test[i:i + 1]
    attack = build(req.get("attack"), req.get("params"), "evasion")
    t = req.get("target")
    goal = (Untargeted() if t in (None, "", "none")
            else Targeted(_int(t, "target class", 0, c.n_classes - 1)))
    seed = _int(req.get("seed", 0), "seed", 0, 2**31 - 1)
    clean = predict(target, x)
    if y is None:  # an upload has no label: the attack moves it away from the model's answer
        y = torch.tensor([clean[0]["index"]])
    try:
        res = attack.attack(target, x, y, goal=goal, generator=torch.Generator().manual_seed(seed))
    except AdvkitError as exc:
        raise WebRequestError(f"{attack.name}: {exc}", 422) from None
    delta = (res.x_adv - res.x)[0]
    out = {
        "attack": attack.name, "doc": _doc(type(attack)),
        "params": {k: _plain(v) for k, v in res.params.items()},
        "label": None if req.get("upload") not in (None, "") else (
            c.class_names[int(y[0])] if c.class_names else str(int(y[0]))),
        "target": None if isinstance(goal, Untargeted) else goal.target,
        "success": bool(res.success[0]), "seconds": res.seconds, "queries": res.queries,
        "original": {"src": png(x[0], c.bounds), "top5": clean},
        "adversarial": {"src": png(res.x_adv[0], c.bounds), "top5": predict(target, res.x_adv)},
        "perturbation": {"src": png(amplified(delta), (0.0, 1.0)),
                         "linf": float(lp_norm(delta[None], math.inf)[0]),
                         "l2": float(lp_norm(delta[None], 2.0)[0]),
                         "norm": "inf" if math.isinf(res.norm) else f"{res.norm:g}",
                         "distance": float(res.distance[0])},
    }
    if req.get("defense") not in (None, "", "none"):
        transform = build(req.get("defense"), req.get("defense_params"), "defense")
        defended = target.with_transforms(transform)
        with torch.no_grad():
            seen = transform.apply(res.x_adv, c.bounds, torch.Generator().manual_seed(seed))
        out["defended"] = {"name": transform.name, "label": transform.label,
                           "src": png(seen[0], c.bounds), "top5": predict(defended, res.x_adv),
                           "clean_top5": predict(defended, x)}
    return out
