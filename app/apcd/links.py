"""Member linking rules: which identifier on a member record may join it to a Patient that
came from another source (an HL7 feed, say).

A rule is `FIELD_ID=SYSTEM`: when the record's element FIELD_ID has a value, the Patient with
the identifier SYSTEM|value is the member's Patient, provided exactly one such Patient exists.
Rules apply in order; the first that finds exactly one Patient wins. Names, birth dates and
other demographics never link. Configured by DXF_APCD_LINK_IDENTIFIERS (docs/configuration.md).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LinkRule", "parse_link_rules"]


@dataclass(frozen=True, slots=True)
class LinkRule:
    field_id: str
    system: str


def parse_link_rules(text: str) -> tuple[LinkRule, ...]:
    """`CDLME075=http://hl7.org/fhir/sid/us-mbi,CDLME009=urn:...` -> rules, in order."""
    rules = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        fid, sep, system = part.partition("=")
        fid, system = fid.strip(), system.strip()
        if not sep or not fid or not system:
            raise ValueError(f"link rule {part!r} is not FIELD_ID=SYSTEM")
        if not (fid.startswith("CDLME") and len(fid) == 8 and fid[5:].isdigit()):
            raise ValueError(f"link rule {part!r}: FIELD_ID must be a member element (CDLMEnnn)")
        if "|" in system:
            raise ValueError(f"link rule {part!r}: the system may not contain '|'")
        rules.append(LinkRule(fid, system))
    return tuple(rules)
