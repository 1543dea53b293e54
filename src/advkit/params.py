"""Parameters declared as data: every constructor parameter of a registered attack or defense
carries its constraint (kind, interval, choices) in one place, its dataclass field.

``steps: int = param(40, int, lo=1)`` declares the field's default and its constraint (kept in the
field's metadata). One validator reads the declarations: ``check_params(self)``, first thing in
each ``__post_init__``, and ``check_values(cls, params)``, on the registry's create path before
anything is built. Both raise one message format, naming the class, the parameter, the allowed
values and the value given::

    PGD: parameter 'eps' must be a finite float in [0, inf); got '0.1' (str)

``describe(cls)`` turns the declarations into JSON for ``advkit describe`` (and forms), and
``invalid_values(decl)`` gives values that break a declaration, for the conformance suite. The idea
is scikit-learn's parameter validation; the code is advkit's own.

Kinds: ``int``, ``float`` (an int is accepted; finite unless ``finite=False``), ``bool``, ``str``
(``choices`` restricts it), ``"norm"`` (inf, 2 or 1, as numbers or 'linf'/'l2'/'l1'; ``choices``
is the allowed subset of p), ``"pair"`` (two numbers, first <= second, or < when ``strict``),
``"ints"``, ``"indices"`` (distinct ints) and ``"numbers"`` (finite numbers), lists of ``length``
items when it is given, ``"array"`` (numpy, torch or nested lists of numbers) and
``"transforms"`` (objects with ``apply``). A tuple of kinds is a union. The interval (``lo``,
``hi``, open ends) bounds numbers and the items of pairs and lists.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np

from advkit.errors import InvalidParameterError, UnknownParameterError

META_KEY = "advkit.param"
_NORMS = (math.inf, 2.0, 1.0)
_NORM_ALIASES = {math.inf: "linf", 2.0: "l2", 1.0: "l1"}
_KIND_NAMES = (int, float, bool, str, "norm", "pair", "ints", "indices", "numbers", "array",
               "transforms")
_LISTS = ("pair", "ints", "indices", "numbers")


@dataclass(frozen=True)
class Param:
    """The constraint of one parameter (see the module docstring for the kinds)."""

    kind: Any
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple | None = None
    optional: bool = False  # None is allowed
    finite: bool = True  # floats: inf excluded
    strict: bool = False  # pairs: first < second (else first <= second)
    length: int | None = None  # lists (ints, indices, numbers): exactly this many items
    doc: str = ""

    def __post_init__(self):
        for k in self.kinds:
            if k not in _KIND_NAMES:
                raise InvalidParameterError("kind", k, f"one of {_KIND_NAMES}")

    @property
    def kinds(self) -> tuple:
        return self.kind if isinstance(self.kind, tuple) else (self.kind,)

    # -- checking ------------------------------------------------------------------------------
    def _in_interval(self, v) -> bool:
        if v != v:  # NaN
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True

    def _number(self, v, integer: bool) -> bool:
        if isinstance(v, bool) or not isinstance(v, int if integer else numbers.Real):
            return False
        if self.finite and not integer and not math.isfinite(v):
            return False
        return self._in_interval(v)

    def _matches(self, kind, v) -> bool:
        if kind is int or kind is float:
            return self._number(v, kind is int) and (self.choices is None or v in self.choices)
        if kind is bool:
            return isinstance(v, bool)
        if kind is str:
            return isinstance(v, str) and (self.choices is None or v in self.choices)
        if kind == "norm":
            return _norm_p(v) in (self.choices or _NORMS)
        if kind == "array":
            return _is_array(v)
        if kind == "transforms":
            return (isinstance(v, list | tuple) and len(v) > 0
                    and all(callable(getattr(t, "apply", None)) for t in v))
        v = _as_list(v)
        if v is None or not v:
            return False
        if self.length is not None and kind != "pair" and len(v) != self.length:
            return False
        if kind == "pair":
            return (len(v) == 2 and all(self._number(x, False) for x in v)
                    and (v[0] < v[1] if self.strict else v[0] <= v[1]))
        if kind in ("ints", "indices"):
            return (all(self._number(x, True) for x in v)
                    and (kind == "ints" or len(set(v)) == len(v)))
        return all(self._number(x, False) for x in v)  # "numbers"

    def accepts(self, value) -> bool:
        if value is None:
            return self.optional
        return any(self._matches(k, value) for k in self.kinds)

    # -- describing ----------------------------------------------------------------------------
    def interval(self) -> str:
        """``[0, inf)``-style text of the interval; an infinite end is open unless a float may
        be infinite (``finite=False``)."""
        inf_in = not self.finite and float in self.kinds
        left = "(" if self.lo_open or (self.lo is None and not inf_in) else "["
        right = ")" if self.hi_open or (self.hi is None and not inf_in) else "]"
        return f"{left}{_num(self.lo, '-inf')}, {_num(self.hi, 'inf')}{right}"

    def _bounded(self) -> bool:
        return self.lo is not None or self.hi is not None

    def _kind_text(self, kind) -> str:
        iv = f" in {self.interval()}" if self._bounded() else ""
        if kind in (int, float, str) and self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if kind is int:
            return f"an int{iv}"
        if kind is float:
            return f"a float{iv}" if iv or not self.finite else "a finite float"
        if kind is bool:
            return "a bool (true or false)"
        if kind is str:
            return "a string"
        if kind == "norm":
            ps = self.choices or _NORMS
            return (f"one of {', '.join(_p_text(p) for p in ps)} "
                    f"(or {', '.join(repr(_NORM_ALIASES[p]) for p in ps)})")
        if kind == "pair":
            op = "<" if self.strict else "<="
            return f"a pair (lo, hi) of numbers{iv} with lo {op} hi"
        n = "a non-empty list" if self.length is None else f"a list of {self.length}"
        if kind == "ints":
            return f"{n} ints{iv}"
        if kind == "indices":
            return f"{n} distinct ints{iv}"
        if kind == "numbers":
            return f"{n} finite numbers{iv}"
        if kind == "array":
            return "an array (numpy, torch or nested lists)"
        return "a non-empty tuple of input transforms (objects with .apply)"

    def describe(self) -> str:
        """The allowed values in words: ``'an int in [1, inf)'``, ``"one of 'ce', 'dlr'"``."""
        text = " or ".join(self._kind_text(k) for k in self.kinds)
        return text + " or None" if self.optional else text

    def type_name(self) -> str:
        names = [k.__name__ if isinstance(k, type) else k for k in self.kinds]
        return " | ".join(names + (["None"] if self.optional else []))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able constraints: ``type``, ``allowed`` (the message's words), ``optional`` and a
        list of ``{"kind": "range", ...}`` / ``{"kind": "choice", ...}`` entries."""
        cons: list[dict[str, Any]] = []
        if self._bounded():
            c = {"kind": "range", "min": _json(self.lo), "max": _json(self.hi),
                 "min_open": self.lo_open, "max_open": self.hi_open}
            scalar = [k for k in self.kinds if k in (int, float)]
            if scalar:
                c["type"] = scalar[0].__name__
            cons.append(c)
        if "norm" in self.kinds:
            ps = self.choices or _NORMS
            cons.append({"kind": "choice", "choices": [_p_text(p) for p in ps],
                         "aliases": [_NORM_ALIASES[p] for p in ps]})
        elif self.choices is not None:
            cons.append({"kind": "choice", "choices": [_json(c) for c in self.choices]})
        if "pair" in self.kinds:
            cons.append({"kind": "order", "strict": self.strict})
        return {"type": self.type_name(), "allowed": self.describe(), "optional": self.optional,
                "finite": self.finite if float in self.kinds else None, "constraints": cons}


def param(default=MISSING, kind=float, *, default_factory=MISSING, optional: bool | None = None,
          **constraint):
    """A dataclass field with ``default`` and the constraint ``Param(kind, **constraint)``;
    ``optional`` (None allowed) defaults to ``default is None``."""
    decl = Param(kind, optional=default is None if optional is None else optional, **constraint)
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={META_KEY: decl})
    return field(default=default, metadata={META_KEY: decl})


def declarations(cls) -> dict[str, Param]:
    """``{name: Param}`` of the declared init fields of the dataclass ``cls`` (bases included)."""
    if not is_dataclass(cls):
        return {}
    return {f.name: f.metadata[META_KEY] for f in fields(cls)
            if f.init and META_KEY in f.metadata}


def undeclared(cls) -> list[str]:
    """Init fields of ``cls`` without a declaration (the conformance suite wants none)."""
    if not is_dataclass(cls):
        return []
    return [f.name for f in fields(cls) if f.init and META_KEY not in f.metadata]


def owner_name(cls) -> str:
    return getattr(cls, "__name__", str(cls))


def check_value(cls, name: str, decl: Param, value) -> None:
    """InvalidParameterError (the one format) when ``value`` breaks ``decl``."""
    if not decl.accepts(value):
        raise InvalidParameterError(name, value, decl.describe(), owner=owner_name(cls))


def check_values(cls, params: dict[str, Any]) -> None:
    """Check keyword parameters for ``cls`` before it is built: an unknown name raises
    UnknownParameterError, a value that breaks its declaration InvalidParameterError."""
    decls = declarations(cls)
    if is_dataclass(cls):
        known = [f.name for f in fields(cls) if f.init]
        for name in params:
            if name not in known:
                raise UnknownParameterError(owner_name(cls), name, params[name], known)
    for name, value in params.items():
        if name in decls:
            check_value(cls, name, decls[name], value)


def check_params(obj) -> None:
    """Check every declared field of ``obj`` (call first in ``__post_init__``); pairs and lists
    of numbers given as lists or 1-D arrays are stored as tuples."""
    cls = type(obj)
    for name, decl in declarations(cls).items():
        value = getattr(obj, name)
        check_value(cls, name, decl, value)
        if (not isinstance(value, tuple | str) and value is not None
                and any(k in _LISTS and decl._matches(k, value) for k in decl.kinds)):
            object.__setattr__(obj, name, tuple(_as_list(value)))


def describe(cls) -> list[dict[str, Any]]:
    """One JSON-able dict per init parameter: name, type, default, required, allowed, optional,
    finite, constraints and doc, read from the declarations."""
    out = []
    if not is_dataclass(cls):
        return out
    decls = declarations(cls)
    for f in fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        required = f.default is MISSING and f.default_factory is MISSING
        default = None if required else (f.default if f.default is not MISSING else
                                         f.default_factory())
        row = {"name": f.name, "default": _json_default(default), "required": required}
        decl = decls.get(f.name)
        if decl is not None:
            row.update(decl.to_dict(), doc=decl.doc)
        else:
            row.update(type=str(f.type), allowed=None, optional=None, finite=None,
                       constraints=[], doc="")
        out.append(row)
    return out


def invalid_values(decl: Param) -> list[Any]:
    """Values that break ``decl``: of a wrong kind, outside the interval, not among the choices,
    None when it is not optional."""
    kinds = decl.kinds
    cands: list[Any] = []
    if not decl.optional:
        cands.append(None)
    cands += ["0.1", 7, [object()], {"a": 1}]  # a string of a number, an int, junk
    scalar = next((k for k in kinds if k in (int, float)), None)
    if scalar is int:
        cands += [2.5, True]
    if scalar is float:
        cands += [math.nan, True]
        if decl.finite:
            cands.append(math.inf)
    if decl.lo is not None:
        cands.append(decl.lo if decl.lo_open else decl.lo - 1)
    if decl.hi is not None:
        cands.append(decl.hi if decl.hi_open else decl.hi + 1)
    if decl.choices is not None or "norm" in kinds:
        cands += ["no-such-choice", "l3"]
    if "norm" in kinds:
        cands += [p for p in _NORMS if p not in (decl.choices or _NORMS)]
    if "pair" in kinds:
        cands += [(1.0,), (1.0, 0.5), ("a", "b")]
        if decl.lo is not None:
            cands.append((decl.lo - 1, decl.lo - 1) if not decl.lo_open else (decl.lo, decl.lo))
    if "ints" in kinds or "indices" in kinds:
        cands += [(), (0, 0), (1.5,), (-1,), (-1, -1), (0, 1, 2)]
    if "numbers" in kinds:
        cands += [(), (math.nan,), ("a",)]
    if "transforms" in kinds:
        cands += [(), (object(),)]
    return [v for v in cands if not decl.accepts(v)]


# -- helpers -------------------------------------------------------------------------------------
def _norm_p(v) -> float | None:
    """p of a norm given as a number or a name, or None when it is not one."""
    if isinstance(v, bool):
        return None
    if isinstance(v, numbers.Real):
        return float(v) if v in _NORMS else None
    if isinstance(v, str):
        key = v.strip().lower().replace("∞", "inf")
        key = key[1:] if key in ("linf", "l2", "l1") else key
        return {"inf": math.inf, "2": 2.0, "1": 1.0}.get(key)
    return None


def _as_list(v) -> list | tuple | None:
    """``v`` itself if it is a list or tuple, a 1-D numpy array or tensor as a list of Python
    numbers, else None."""
    if isinstance(v, list | tuple):
        return v
    if hasattr(v, "tolist") and getattr(v, "ndim", None) == 1:
        return v.tolist()
    return None


def _is_array(v) -> bool:
    """A numpy array, a torch tensor, or (nested) lists of numbers."""
    if isinstance(v, list | tuple):
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            return False
        return a.ndim >= 1 and a.size > 0
    return hasattr(v, "shape") and hasattr(v, "dtype")


def _num(v, none: str) -> str:
    if v is None:
        return none
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _p_text(p: float) -> str:
    return "inf" if math.isinf(p) else str(int(p))


def _json(v):
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _json_default(v):
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    if isinstance(v, list | tuple):
        return [_json_default(x) for x in v]
    return repr(v)


def invalid(obj, name: str, allowed: str, *, given: str | None = None) -> InvalidParameterError:
    """The one-format error for a check a declaration cannot express (a cross-parameter one):
    ``raise invalid(self, "theta", "a nonzero float in [-1, 1]")``; ``given`` describes the
    value instead of its repr (``"an array of shape (3, 3)"``)."""
    return InvalidParameterError(name, getattr(obj, name), allowed, owner=owner_name(type(obj)),
                                 given=given)
