"""Names → classes for attacks and defenses.

``@register("pgd", family="evasion", threat=...)`` on a class makes it available to
``create("pgd", eps=...)``, ``advkit list`` and ``advkit describe pgd``; the conformance suite and
docs iterate ``entries()``. Each entry holds the class and its threat tag (``advkit.threat_tags``);
``create`` checks every parameter against its declaration (``advkit.params``) before building.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
from dataclasses import dataclass

from advkit import params as _params
from advkit.errors import InvalidParameterError, RegistrationError
from advkit.threat_tags import ThreatTag

FAMILIES = ("evasion", "poisoning", "privacy", "defense")
# packages whose modules register entries; imported on first use of the registry
_PACKAGES = ("advkit.attacks", "advkit.defenses")


@dataclass(frozen=True)
class Entry:
    name: str
    family: str
    cls: type
    threat: ThreatTag | None = None  # declared at registration

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.cls) or ""
        return doc.strip().splitlines()[0] if doc else ""

    def parameters(self) -> builtins.list[tuple[str, object, str]]:
        """(name, default, type) of each constructor parameter (the type from its declaration)."""
        return [(p["name"], p["default"], p["type"]) for p in _params.describe(self.cls)]

    def declarations(self) -> dict[str, _params.Param]:
        """``{parameter: Param}``: each parameter's declared constraint."""
        return _params.declarations(self.cls)


_REGISTRY: dict[str, Entry] = {}
_loaded = False


def _same_class(a: type, b: type) -> bool:
    """The same class object, or the same class defined again by reloading its module."""
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register(name: str, family: str, threat: ThreatTag | None = None):
    """Class decorator: register ``cls`` under ``name`` in ``family`` with its threat tag.

    A name another class already holds raises RegistrationError (registering the same class
    again, as a module reload does, is allowed)."""
    if family not in FAMILIES:
        raise InvalidParameterError("family", family, f"one of {FAMILIES}")
    if threat is not None and not isinstance(threat, ThreatTag):
        raise InvalidParameterError("threat", threat, "a ThreatTag (advkit.threat_tags.tag)")

    def deco(cls):
        prev = _REGISTRY.get(name)
        if prev is not None and not _same_class(prev.cls, cls):
            raise RegistrationError(
                f"registry name {name!r} is already taken by "
                f"{prev.cls.__module__}.{prev.cls.__qualname__}; register "
                f"{cls.__module__}.{cls.__qualname__} under another name")
        _REGISTRY[name] = Entry(name, family, cls, threat)
        cls.name = name
        cls.family = family
        cls.threat_tag = threat
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


def create(name: str, **params):
    """Build the registered class ``name`` with keyword parameters, each checked against its
    declaration first (``advkit.params``): InvalidParameterError in the one message format."""
    entry = get(name)
    _params.check_values(entry.cls, params)
    try:
        return entry.cls(**params)
    except TypeError as exc:  # a class without declarations, or a required parameter missing
        allowed = ", ".join(p for p, _, _ in entry.parameters())
        raise InvalidParameterError(name, params,
                                    f"keyword parameters among ({allowed}): {exc}") from None


def entries(family: str | None = None) -> builtins.list[Entry]:
    _load_all()
    return sorted(
        (e for e in _REGISTRY.values() if family is None or e.family == family),
        key=lambda e: (e.family, e.name),
    )


def list(family: str | None = None) -> builtins.list[str]:  # noqa: A001 - DESIGN names it list
    """Registered names, optionally of one family."""
    return [e.name for e in entries(family)]
