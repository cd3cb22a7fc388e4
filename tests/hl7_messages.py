"""Hand-written HL7v2 messages for the ingestion tests (fictional people)."""

from __future__ import annotations


def er7(*segments: str, sep: str = "\r") -> bytes:
    return (sep.join(segments) + sep).encode()


def msh(
    event: str = "ADT^A01^ADT_A01",
    control: str = "MSG1",
    *,
    when: str = "20260301101500-0800",
    version: str = "2.5.1",
    accept: str = "",
    application: str = "",
    sender: str = "EPIC^1.2.3^ISO",
    facility: str = "GOODHOSP",
) -> str:
    return (
        f"MSH|^~\\&|{sender}|{facility}|DXF|DXF|{when}||{event}|{control}|P|{version}"
        f"|||{accept}|{application}"
    )


def pid(
    mrn: str = "MRN1001",
    *,
    family: str = "NGUYEN",
    given: str = "LAN",
    birth: str = "19750930",
    sex: str = "F",
    authority: str = "GOODHOSP",
    extra: str = "",
) -> str:
    return (
        f"PID|1||{mrn}^^^{authority}^MR{extra}||{family}^{given}^T||{birth}|{sex}|||"
        "12 MAIN ST^^SACRAMENTO^CA^95814^USA^H||^PRN^PH^^1^916^5550101|||M"
    )


def pv1(
    visit: str = "V5001",
    *,
    patient_class: str = "I",
    location: str = "4W^401^A^GOODHOSP",
    prior: str = "",
    admit: str = "20260301100000",
    discharge: str = "",
) -> str:
    fields = ["PV1", "1", patient_class, location, "E", "", prior, "1234^WELBY^MARCUS^^^DR"]
    fields += [""] * (19 - len(fields))
    fields.append(f"{visit}^^^GOODHOSP^VN")
    fields += [""] * (44 - len(fields))
    fields += [admit, discharge]
    return "|".join(fields)


def evn(event: str, when: str) -> str:
    return f"EVN|{event}|{when}"


def adt(
    event: str,
    control: str,
    when: str,
    *,
    visit: str = "V5001",
    location: str = "4W^401^A^GOODHOSP",
    discharge: str = "",
    patient: str | None = None,
    extra: tuple[str, ...] = (),
) -> bytes:
    return er7(
        msh(f"ADT^{event}", control, when=when),
        evn(event, when),
        patient or pid(),
        pv1(visit, location=location, discharge=discharge),
        *extra,
    )


def oru(control: str = "LAB1", *obx: str, obr_extra: str = "") -> bytes:
    return er7(
        msh("ORU^R01^ORU_R01", control, sender="LABSYS", facility="CENTRAL LAB"),
        pid(),
        "ORC|RE|PLC100^EHR|FIL200^LAB",
        "OBR|1|PLC100^EHR|FIL200^LAB|24323-8^Comprehensive metabolic panel^LN|||20260302083000-0800"
        f"|||||||||||||||20260302093000-0800|||F{obr_extra}",
        *obx,
        "SPM|1|SP1^EHR&FIL200&LAB||119297000^Blood specimen^SCT|||||||||||||20260302081500-0800",
    )
