"""Machine-readable descriptions of registered attacks and defenses (``advkit list/describe --json``).

``describe_entry`` returns name, family, class, threat tag, what the entry needs of a target, its
parameters (type, default and the constraints its constructor checks) and its documentation.

Constraints are read from the constructor's own checks: each ``check_range(name, ..., lo=, hi=)``
and ``check_choice(name, ..., choices)`` call with a literal parameter name in ``__post_init__``
(of the class or a base class) becomes ``{"kind": "range", ...}`` or ``{"kind": "choice", ...}``;
a bound that is not a literal is given as its source text. The threat tag is derived from the
family, the module and ``requires`` (``"derived": true``): a gradient attack is white box, one that
needs only scores or labels is black box.
"""

from __future__ import annotations

import ast
import inspect
import math
import textwrap
from typing import Any

from advkit.registry import Entry

# MITRE ATLAS techniques, as named in the ATLAS 4.x releases (names drift between releases)
ATLAS_RELEASE = "4.x"
_ATLAS = {
    "AML.T0015": "Evade ML Model",
    "AML.T0043.000": "Craft Adversarial Data: White-Box Optimization",
    "AML.T0043.001": "Craft Adversarial Data: Black-Box Optimization",
    "AML.T0043.004": "Craft Adversarial Data: Insert Backdoor Trigger",
    "AML.T0020": "Poison Training Data",
    "AML.T0018": "Backdoor ML Model",
    "AML.T0024.000": "Infer Training Data Membership",
    "AML.T0024.001": "Invert ML Model",
    "AML.T0024.002": "Extract ML Model",
}
_BACKDOOR_DETECTORS = ("neural_cleanse", "fine_pruning", "activation_clustering", "spectral")
_BACKDOOR = ("AML.T0020", "AML.T0018", "AML.T0043.004")


def _atlas(ids) -> list[dict[str, str]]:
    return [{"id": i, "name": _ATLAS[i]} for i in ids]


def threat_tag(e: Entry) -> dict[str, Any]:
    """Property at risk, phase, knowledge and ATLAS techniques of an attack (for a defense: of the
    attacks it mitigates)."""
    requires = set(getattr(e.cls, "requires", ()) or ())
    module = e.cls.__module__
    if e.family == "evasion":
        white = "gradients" in requires or "internals" in requires
        tag = {"property": "integrity", "phase": "inference",
               "knowledge": "white box" if white else "black box",
               "atlas": _atlas(("AML.T0015", "AML.T0043.000" if white else "AML.T0043.001"))}
    elif e.family == "poisoning":
        backdoor = e.name != "label_flip"
        tag = {"property": "integrity", "phase": "training", "knowledge": "grey box",
               "atlas": _atlas(_BACKDOOR if backdoor else ("AML.T0020",))}
    elif e.family == "privacy":
        ids = {"membership": "AML.T0024.000", "inversion": "AML.T0024.001",
               "extraction": "AML.T0024.002"}
        atlas = [i for k, i in ids.items() if k in module or k in e.name]
        tag = {"property": "privacy" if "extraction" not in module else "confidentiality",
               "phase": "inference", "knowledge": "black box", "atlas": _atlas(atlas)}
    else:  # a defense: tagged with what it mitigates
        if any(k in module for k in _BACKDOOR_DETECTORS):
            tag = {"property": "integrity", "phase": "training", "atlas": _atlas(_BACKDOOR)}
        elif module.endswith(".output"):
            tag = {"property": "confidentiality", "phase": "inference",
                   "atlas": _atlas(("AML.T0024.000", "AML.T0024.002", "AML.T0043.000"))}
        else:
            tag = {"property": "integrity", "phase": "inference",
                   "atlas": _atlas(("AML.T0015", "AML.T0043.000", "AML.T0043.001"))}
        tag = {"mitigates": tag}
    return {**tag, "atlas_release": ATLAS_RELEASE, "derived": True}


def _literal(node: ast.AST) -> Any:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        text = ast.unparse(node)
        return {"math.inf": math.inf, "inf": math.inf}.get(text, text)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    return value


def _json_number(v: Any) -> Any:
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, list):
        return [_json_number(x) for x in v]
    return v


def constraints(cls: type) -> dict[str, list[dict[str, Any]]]:
    """``{parameter: [constraint, ...]}`` read from the ``check_range``/``check_choice`` calls in
    ``__post_init__`` of ``cls`` and its bases."""
    out: dict[str, list[dict[str, Any]]] = {}
    for klass in cls.__mro__:
        fn = klass.__dict__.get("__post_init__")
        if fn is None:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        except (OSError, TypeError, SyntaxError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            first = node.args[0]
            if name not in ("check_range", "check_choice") or not (
                    isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            kw = {k.arg: _literal(k.value) for k in node.keywords if k.arg}
            if name == "check_range":
                c = {"kind": "range", "min": kw.get("lo"), "max": kw.get("hi"),
                     "min_open": bool(kw.get("lo_open", False)),
                     "max_open": bool(kw.get("hi_open", False))}
                if "kind" in kw:
                    c["type"] = kw["kind"] if isinstance(kw["kind"], str) else str(kw["kind"])
            else:
                choices = _literal(node.args[2]) if len(node.args) > 2 else kw.get("choices")
                c = {"kind": "choice", "choices": choices}
            c = {k: _json_number(v) for k, v in c.items()}
            if c not in out.setdefault(first.value, []):
                out[first.value].append(c)
        src = ast.unparse(tree)
        if ("LpBall(" in src or "parse_norm(" in src) and "norm" not in out:
            out["norm"] = [{"kind": "choice", "choices": ["inf", "2", "1"],
                            "aliases": ["linf", "l2", "l1"]}]
    return out


def _default(v: Any) -> Any:
    from dataclasses import MISSING

    if v is MISSING:
        return None
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    if isinstance(v, list | tuple):
        return [_default(x) for x in v]
    return repr(v)


def describe_entry(e: Entry) -> dict[str, Any]:
    """Everything ``advkit describe NAME --json`` prints, as plain JSON-able values."""
    cons = constraints(e.cls)
    mod_doc = inspect.getdoc(inspect.getmodule(e.cls)) or ""
    return {
        "name": e.name,
        "family": e.family,
        "class": f"{e.cls.__module__}.{e.cls.__qualname__}",
        "summary": e.summary,
        "requires": sorted(getattr(e.cls, "requires", ()) or ()),
        "threat": threat_tag(e),
        "parameters": [{"name": n, "type": t, "default": _default(d), "required": _required(d),
                        "constraints": cons.get(n, [])} for n, d, t in e.parameters()],
        "doc": inspect.getdoc(e.cls) or "",
        "module_doc": mod_doc,
    }


def _required(v: Any) -> bool:
    from dataclasses import MISSING

    return v is MISSING


def list_entries(family: str | None = None) -> list[dict[str, Any]]:
    """Short machine-readable rows of ``advkit list --json``."""
    from advkit import registry

    return [{"name": e.name, "family": e.family, "summary": e.summary,
             "requires": sorted(getattr(e.cls, "requires", ()) or ()), "threat": threat_tag(e)}
            for e in registry.entries(family)]
