"""Which registered attacks a target can run, from each attack's declared ``requires``.

An attack runs on a target when everything it ``requires`` is among the target's capabilities.
Suggestions made when an attack cannot run name only such attacks (never one that needs what the
target lacks), or say plainly that none is registered yet.
"""

from __future__ import annotations

from collections.abc import Iterable

from advkit import registry

_ORDER = ("gradients", "logits", "probabilities", "labels")


def capability_names(capabilities) -> frozenset[str]:
    """The capability names of a ``Capabilities`` (or of an iterable of names)."""
    names = getattr(capabilities, "names", None)
    return frozenset(names() if callable(names) else capabilities)


def requires(name: str) -> frozenset[str]:
    """What the registered attack ``name`` needs of a target."""
    return frozenset(getattr(registry.get(name).cls, "requires", ()) or ())


def runnable_attacks(capabilities, family: str = "evasion") -> list[str]:
    """Registered attacks of ``family`` whose ``requires`` are all offered by the target."""
    has = capability_names(capabilities)
    return [e.name for e in registry.entries(family)
            if frozenset(getattr(e.cls, "requires", ()) or ()) <= has]


def describe(capabilities) -> str:
    """``'labels, probabilities'`` (or ``'nothing'``): what a target offers, in a fixed order."""
    has = capability_names(capabilities)
    return ", ".join(c for c in _ORDER if c in has) or "nothing"


def needs_text(names: Iterable[str]) -> str:
    """``'square (needs probabilities)'`` for each name."""
    return ", ".join(f"{n} (needs {', '.join(sorted(requires(n))) or 'nothing'})" for n in names)


def none_registered(capabilities, family: str = "evasion") -> str:
    """The sentence for a target on which no registered attack of ``family`` runs."""
    has = capability_names(capabilities)
    if has <= {"labels"}:
        return (f"no registered {family} attack runs on a target that answers labels only; "
                "audit a model that also answers scores (probabilities or logits) or gradients")
    return f"no registered {family} attack needs only {describe(has)}"


def alternatives(capabilities, prefer: str | None = None, family: str = "evasion") -> str:
    """What to try instead of an attack the target cannot run: the registered attacks that run on
    it (``prefer`` first when it is one of them), or :func:`none_registered`."""
    works = runnable_attacks(capabilities, family)
    if not works:
        return none_registered(capabilities, family)
    if prefer in works:
        works = [prefer] + [w for w in works if w != prefer]
    return f"try {needs_text(works)}, which the target supports"
