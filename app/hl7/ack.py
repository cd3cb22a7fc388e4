"""Acknowledgements (HL7 v2.5.1 section 2.9 "Message processing rules", 2.14.1 ACK; tables 0008,
0155, 0357; ../shared/reference/requirements.md V2-10, V2-11).

- The ACK uses the sender's delimiters and MSH-12 version; MSA-2 echoes MSH-10; MSH-9 is
  `ACK^<event>^ACK`; sending and receiving application/facility are swapped.
- Original mode (MSH-15 and MSH-16 empty): AA / AE / AR.
- Enhanced mode (either valued): the answer on the connection is the accept acknowledgement
  CA / CE / CR when MSH-15 (AL always, NE never, ER on error, SU on success; empty = AL) asks
  for one; otherwise the application acknowledgement AA / AE / AR when MSH-16 asks for one;
  otherwise nothing. The receiver processes a message before answering, so the commit outcome
  and the application outcome are the same.
- Every AE/AR/CE/CR carries an ERR segment: ERR-2 location, ERR-3 the table 0357 code, ERR-4
  severity E, ERR-8 the reason (v2.5 and later); ERR-1 (location^code) for earlier versions.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import datetime

from app.hl7.parse import DEFAULT_DELIMITERS, Delimiters, Hl7Error, Message

__all__ = ["AckPlan", "build_ack", "plan_ack"]

_ERROR_TEXT = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}
_counter = itertools.count(1)
_PREFIX = os.urandom(3).hex().upper()


@dataclass(frozen=True, slots=True)
class AckPlan:
    code: str  # AA AE AR CA CE CR
    send: bool  # False when MSH-15/MSH-16 ask for no acknowledgement of this outcome


def _wants(value: str, ok: bool) -> bool:
    value = value.upper()
    if value in ("", "AL"):
        return True
    if value == "NE":
        return False
    if value == "ER":
        return not ok
    if value == "SU":
        return ok
    return True


def plan_ack(msg: Message | None, outcome: str) -> AckPlan:
    """outcome: 'ok', 'error' (AE/CE) or 'reject' (AR/CR)."""
    ok = outcome == "ok"
    original = {"ok": "AA", "error": "AE", "reject": "AR"}[outcome]
    if msg is None:
        return AckPlan(original, True)
    accept, application = msg.msh.c(15), msg.msh.c(16)
    if not accept and not application:
        return AckPlan(original, True)
    enhanced = {"ok": "CA", "error": "CE", "reject": "CR"}[outcome]
    if _wants(accept, ok):
        return AckPlan(enhanced, True)
    if application and _wants(application, ok):
        return AckPlan(original, True)
    return AckPlan(enhanced, False)


def _escape(text: str, d: Delimiters) -> str:
    if not d.escape:  # the sender declared no escape character: drop delimiters instead
        for ch in (d.field, d.component, d.subcomponent, d.repetition):
            text = text.replace(ch, " ")
        return text.replace("\r", " ").replace("\n", " ")
    out = text.replace(d.escape, f"{d.escape}E{d.escape}")
    for ch, code in (
        (d.field, "F"),
        (d.component, "S"),
        (d.subcomponent, "T"),
        (d.repetition, "R"),
    ):
        out = out.replace(ch, f"{d.escape}{code}{d.escape}")
    return out.replace("\r", " ").replace("\n", " ")


def _version_at_least(version: str, major: int, minor: int) -> bool:
    try:
        parts = [int(p) for p in version.split(".")[:2]]
    except ValueError:
        return True
    return (parts[0], parts[1] if len(parts) > 1 else 0) >= (major, minor)


def build_ack(
    msg: Message | None,
    code: str,
    *,
    now: datetime,
    application: str,
    facility: str,
    error: Hl7Error | None = None,
) -> str:
    """The ACK message as ER7 text (segments ended by CR)."""
    d = msg.delims if msg is not None else DEFAULT_DELIMITERS
    fs = d.field
    if msg is not None:
        msh = msg.msh
        receiver_app, receiver_fac = msh.raw(3), msh.raw(4)
        own_app = msh.raw(5) or _escape(application, d)
        own_fac = msh.raw(6) or _escape(facility, d)
        event = msg.trigger_event if msg.trigger_event.isalnum() else ""
        processing = msh.raw(11) if msh.c(11, 1).upper() in ("P", "T", "D") else "P"
        version = msh.raw(12) if msg.version and len(msg.version) <= 12 else "2.5.1"
        control = msh.raw(10)
    else:
        receiver_app = receiver_fac = ""
        own_app, own_fac = _escape(application, d), _escape(facility, d)
        event, processing, version, control = "", "P", "2.5.1", ""
    ack_type = f"ACK{d.component}{event}{d.component}ACK" if event else "ACK"
    stamp = now.strftime("%Y%m%d%H%M%S") + now.strftime("%z")
    ack_id = f"{_PREFIX}{next(_counter):09d}"
    fields = [
        "MSH",
        d.encoding_characters,
        own_app,
        own_fac,
        receiver_app,
        receiver_fac,
        stamp,
        "",
        ack_type,
        ack_id,
        processing,
        version,
    ]
    segments = [fs.join(fields)]
    msa = ["MSA", code, control]
    if error is not None:
        msa.append(_escape(error.reason[:80], d))  # cut before escaping: never mid-escape
    segments.append(fs.join(msa))
    if error is not None:
        segments.append(_err_segment(error, d, version))
    return "\r".join(segments) + "\r"


def _err_segment(error: Hl7Error, d: Delimiters, version: str) -> str:
    seg, seq, fld, comp = error.location or ("", 0, 0, 0)
    location = d.component.join(
        [seg, str(seq) if seq else "", str(fld) if fld else "", "", str(comp) if comp else ""]
    ).rstrip(d.component)
    cwe = d.component.join([error.code, _ERROR_TEXT.get(error.code, "Error"), "HL70357"])
    reason = _escape(error.reason, d)
    if _version_at_least(version, 2, 5):
        return d.field.join(["ERR", "", location, cwe, "E", "", "", "", reason])
    eld = d.component.join(
        [
            seg,
            str(seq) if seq else "",
            str(fld) if fld else "",
            cwe.replace(d.component, d.subcomponent),
        ]
    )
    return d.field.join(["ERR", eld])
