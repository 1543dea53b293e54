"""Threat tags: the threat taxonomy of every registered attack and defense (and of findings).

A ``ThreatTag`` names the property at risk (confidentiality, integrity, availability, privacy),
the phase (training, inference, supply chain), the attacker's knowledge (white, grey or black
box) and the MITRE ATLAS technique: its ID, its name and the ATLAS release the name was read from
(names drift between releases: later releases say "AI" where these say "ML"). ``related`` holds
further ATLAS IDs the same scenario exercises. On a defense, ``mitigates`` is True and the tag
describes the threat it addresses.

Attacks and defenses declare their tag at registration: ``@register("pgd", family="evasion",
threat=tag("AML.T0043.000", "white box"))``; ``registry.get("pgd").threat`` reads it back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from advkit.errors import InvalidParameterError

ATLAS_RELEASE = "4.x"  # the MITRE ATLAS data release (v4 series) the names below were read from
PROPERTIES = ("confidentiality", "integrity", "availability", "privacy")
PHASES = ("training", "inference", "supply chain")
KNOWLEDGE = ("white box", "grey box", "black box")

# ATLAS ID -> (name, property at risk, phase)
TECHNIQUES: dict[str, tuple[str, str, str]] = {
    "AML.T0015": ("Evade ML Model", "integrity", "inference"),
    "AML.T0043": ("Craft Adversarial Data", "integrity", "inference"),
    "AML.T0043.000": ("Craft Adversarial Data: White-Box Optimization", "integrity", "inference"),
    "AML.T0043.001": ("Craft Adversarial Data: Black-Box Optimization", "integrity", "inference"),
    "AML.T0043.002": ("Craft Adversarial Data: Black-Box Transfer", "integrity", "inference"),
    "AML.T0043.003": ("Craft Adversarial Data: Manual Modification", "integrity", "inference"),
    "AML.T0043.004": ("Craft Adversarial Data: Insert Backdoor Trigger", "integrity",
                      "inference"),
    "AML.T0020": ("Poison Training Data", "integrity", "training"),
    "AML.T0018": ("Backdoor ML Model", "integrity", "training"),
    "AML.T0024": ("Exfiltration via ML Inference API", "privacy", "inference"),
    "AML.T0024.000": ("Infer Training Data Membership", "privacy", "inference"),
    "AML.T0024.001": ("Invert ML Model", "privacy", "inference"),
    "AML.T0024.002": ("Extract ML Model", "confidentiality", "inference"),
    "AML.T0010": ("ML Supply Chain Compromise", "integrity", "supply chain"),
    "AML.T0010.001": ("ML Supply Chain Compromise: ML Software", "integrity", "supply chain"),
    "AML.T0010.002": ("ML Supply Chain Compromise: Data", "integrity", "supply chain"),
    "AML.T0010.003": ("ML Supply Chain Compromise: Model", "integrity", "supply chain"),
    "AML.T0011.000": ("User Execution: Unsafe ML Artifacts", "integrity", "supply chain"),
}
_ID = re.compile(r"AML\.T\d{4}(\.\d{3})?")


def _check(name: str, value, allowed) -> None:
    if value not in allowed:
        raise InvalidParameterError(name, value, "one of " + ", ".join(map(repr, allowed)),
                                    owner="ThreatTag")


@dataclass(frozen=True)
class ThreatTag:
    """Property at risk, phase, attacker knowledge and MITRE ATLAS technique of a threat."""

    property: str
    phase: str
    knowledge: str
    atlas_id: str
    atlas_name: str
    atlas_release: str = ATLAS_RELEASE
    related: tuple[str, ...] = ()
    mitigates: bool = False  # True on a defense: the tag is the threat it addresses

    def __post_init__(self):
        _check("property", self.property, PROPERTIES)
        _check("phase", self.phase, PHASES)
        _check("knowledge", self.knowledge, KNOWLEDGE)
        for i in (self.atlas_id, *self.related):
            if not isinstance(i, str) or not _ID.fullmatch(i):
                raise InvalidParameterError("atlas_id", i, "an ATLAS technique ID such as "
                                            "'AML.T0043.000'", owner="ThreatTag")
        if not isinstance(self.atlas_name, str) or not self.atlas_name:
            raise InvalidParameterError("atlas_name", self.atlas_name, "a non-empty string",
                                        owner="ThreatTag")
        object.__setattr__(self, "related", tuple(self.related))

    @property
    def atlas(self) -> list[dict[str, str]]:
        """The technique and the related ones as ``{"id", "name"}`` (names known to advkit)."""
        return [{"id": i, "name": TECHNIQUES[i][0] if i in TECHNIQUES else ""}
                for i in (self.atlas_id, *self.related)]

    def to_dict(self) -> dict[str, Any]:
        return {"property": self.property, "phase": self.phase, "knowledge": self.knowledge,
                "atlas_id": self.atlas_id, "atlas_name": self.atlas_name,
                "atlas_release": self.atlas_release, "related": list(self.related),
                "mitigates": self.mitigates, "atlas": self.atlas}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ThreatTag:
        return cls(property=d["property"], phase=d["phase"], knowledge=d["knowledge"],
                   atlas_id=d["atlas_id"], atlas_name=d["atlas_name"],
                   atlas_release=d.get("atlas_release", ATLAS_RELEASE),
                   related=tuple(d.get("related", ())), mitigates=bool(d.get("mitigates", False)))


def tag(atlas_id: str, knowledge: str, *, related=(), mitigates: bool = False,
        property: str | None = None, phase: str | None = None) -> ThreatTag:  # noqa: A002
    """A ``ThreatTag`` for a technique of ``TECHNIQUES``: its name, property and phase come from
    the table unless given."""
    if atlas_id not in TECHNIQUES:
        raise InvalidParameterError("atlas_id", atlas_id, "one of " + ", ".join(TECHNIQUES),
                                    owner="ThreatTag")
    name, prop, ph = TECHNIQUES[atlas_id]
    return ThreatTag(property=property or prop, phase=phase or ph, knowledge=knowledge,
                     atlas_id=atlas_id, atlas_name=name, related=tuple(related),
                     mitigates=mitigates)


# the tags shared by several registered classes
WHITE_BOX_EVASION = tag("AML.T0043.000", "white box", related=("AML.T0015",))
BLACK_BOX_EVASION = tag("AML.T0043.001", "black box", related=("AML.T0015",))
BACKDOOR_POISONING = tag("AML.T0020", "grey box", related=("AML.T0018", "AML.T0043.004"))
LABEL_POISONING = tag("AML.T0020", "grey box")
# defenses: the threat each one addresses
MITIGATES_EVASION = tag("AML.T0043.000", "white box", related=("AML.T0015",), mitigates=True)
MITIGATES_BACKDOOR = tag("AML.T0020", "grey box", related=("AML.T0018", "AML.T0043.004"),
                         mitigates=True)
MITIGATES_MEMBERSHIP = tag("AML.T0024.000", "black box", related=("AML.T0024.001",),
                           mitigates=True)
MITIGATES_EXTRACTION = tag("AML.T0024.002", "black box",
                           related=("AML.T0024.000", "AML.T0043.001"), mitigates=True)
