"""Names → classes for attacks and defenses.

``@register("pgd", family="evasion")`` on a class makes it available to ``create("pgd", eps=...)``,
``advkit list`` and ``advkit describe pgd``; the conformance suite and docs iterate ``entries()``.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
from dataclasses import dataclass, fields, is_dataclass

from advkit.errors import InvalidParameterError

FAMILIES = ("evasion", "poisoning", "privacy", "defense")
# packages whose modules register entries; imported on first use of the registry
_PACKAGES = ("advkit.attacks", "advkit.defenses")


@dataclass(frozen=True)
class Entry:
    name: str
    family: str
    cls: type

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.cls) or ""
        return doc.strip().splitlines()[0] if doc else ""

    def parameters(self) -> builtins.list[tuple[str, object, str]]:
        """(name, default, type) of each constructor parameter."""
        out = []
        for f in fields(self.cls):
            if not f.init or f.name.startswith("_"):
                continue
            out.append((f.name, f.default, str(f.type)))
        return out


_REGISTRY: dict[str, Entry] = {}
_loaded = False


def register(name: str, family: str):
    """Class decorator: register ``cls`` under ``name`` in ``family``."""
    if family not in FAMILIES:
        raise InvalidParameterError("family", family, f"one of {FAMILIES}")

    def deco(cls):
        prev = _REGISTRY.get(name)
        if prev is not None and prev.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"registry name {name!r} is already taken by {prev.cls.__qualname__}")
        _REGISTRY[name] = Entry(name, family, cls)
        cls.name = name
        cls.family = family
        return cls

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg_name in _PACKAGES:
        try:
            pkg = importlib.import_module(pkg_name)
        except ModuleNotFoundError:
            continue
        for mod in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
            importlib.import_module(mod.name)


def get(name: str) -> Entry:
    _load_all()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise InvalidParameterError("name", name, f"a registered name ({known})")
    return _REGISTRY[name]


_BOOL_TYPES = {"bool": False, "bool | None": True, "None | bool": True,
               "Optional[bool]": True, bool: False}


def check_bool_params(cls: type, params: dict) -> None:
    """Refuse a non-bool value for a field of ``cls`` annotated ``bool`` (or ``bool | None``):
    ``random_start="yes"`` from a spec would otherwise be truthy and silently mean True."""
    for f in fields(cls):
        if f.name not in params or f.type not in _BOOL_TYPES:
            continue
        value = params[f.name]
        if not isinstance(value, bool) and not (value is None and _BOOL_TYPES[f.type]):
            allowed = "true or false" + (" or null" if _BOOL_TYPES[f.type] else "")
            raise InvalidParameterError(f.name, value, f"{allowed} (a boolean, not a "
                                        f"{type(value).__name__}; in a YAML spec, unquoted)")


def create(name: str, **params):
    """Build the registered class ``name`` with keyword parameters; a bool-typed parameter must be
    given a bool (InvalidParameterError otherwise)."""
    entry = get(name)
    if is_dataclass(entry.cls):
        check_bool_params(entry.cls, params)
    try:
        return entry.cls(**params)
    except TypeError as exc:
        allowed = ", ".join(p for p, _, _ in entry.parameters())
        raise InvalidParameterError(name, params, f"keyword parameters among ({allowed}): {exc}") from None


def entries(family: str | None = None) -> builtins.list[Entry]:
    _load_all()
    return sorted(
        (e for e in _REGISTRY.values() if family is None or e.family == family),
        key=lambda e: (e.family, e.name),
    )


def list(family: str | None = None) -> builtins.list[str]:  # noqa: A001 - DESIGN names it list
    """Registered names, optionally of one family."""
    return [e.name for e in entries(family)]
