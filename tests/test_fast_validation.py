"""The fast validation path (app.fhir.models.plainly_valid) never accepts what the
fhir.resources models reject, and accepts what the APCD mappers produce."""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from app.apcd.layout import load_layout
from app.apcd.mapping import Mapper, Namespace
from app.apcd.reader import lines, scan
from app.apcd.synth import write_apcd_files
from app.errors import Unprocessable
from app.fhir.models import check_resource, plainly_valid, validate_resource
from app.hl7.service import Hl7Service
from app.store.tables import resource
from tests.hl7_messages import adt


def mapped_resources(tmp_path: Any) -> list[dict[str, Any]]:
    """Every resource the mappers make from a small synthetic file of each type."""
    made = write_apcd_files(tmp_path, members=30, seed=5, bad_share=0.0, medical_lines=400)
    layout = load_layout("3.0.1")
    out: list[dict[str, Any]] = []
    for kind, path in made.files.items():
        env = scan(path, layout)
        mapper = Mapper(Namespace(env.submitter, env.payer), layout.record(kind))
        claims: dict[str, list[list[str]]] = {}
        for parsed in lines(env, layout):
            assert parsed.values is not None
            if kind in ("MC", "PC", "DC"):
                claims.setdefault(parsed.values[4], []).append(parsed.values)
            elif kind == "ME":
                out += [b for _t, _i, b in mapper.member(mapper.row(parsed.values), "p1", [])]
            else:
                out += [b for _t, _i, b in mapper.provider(mapper.row(parsed.values))]
        for rows in claims.values():
            picture = mapper.claim([mapper.row(v) for v in rows], "p1")
            out += [b for _t, _i, b in picture.resources]
    return out


def models_accept(body: dict[str, Any]) -> bool:
    try:
        validate_resource(body)
    except Unprocessable:
        return False
    return True


def test_what_the_mappers_make_takes_the_fast_path(tmp_path):
    bodies = mapped_resources(tmp_path)
    kinds = {b["resourceType"] for b in bodies}
    assert {"ExplanationOfBenefit", "Patient", "Coverage", "MedicationDispense"} <= kinds
    assert all(plainly_valid(b) for b in bodies)
    assert all(models_accept(b) for b in bodies)


async def test_what_the_hl7_mappers_make_takes_the_fast_path(db, settings):
    result = await Hl7Service(db, settings).handle(
        adt("A01", "FAST1", "20260301101500-0800"), "test"
    )
    assert result.code == "AA"
    async with db.read() as conn:
        rows = (await conn.execute(select(resource.c.res_type, resource.c.content))).all()
    bodies = {row.res_type: orjson.loads(row.content) for row in rows}
    assert {"Patient", "Encounter", "Provenance"} <= bodies.keys()
    for body in bodies.values():  # timestamps with offsets, instants, extensions, references
        assert plainly_valid(body), body["resourceType"]
        assert models_accept(body)


_TIMESTAMPS = [
    ("2024-05-01T10:00:00Z", True),
    ("2024-05-01T10:00:00.123-08:00", True),
    ("2024-05-01T10:00:00.123456+14:00", True),
    ("2024-05-01T10:00:00-00:00", True),
    ("2024-02-29T23:59:59+05:30", True),
    ("2024-05-01T10:00:00", False),  # no time zone
    ("2024-02-30T10:00:00Z", False),
    ("2023-02-29T10:00:00Z", False),
    ("2024-05-01T24:00:00Z", False),
    ("2016-12-31T23:59:60Z", False),  # a leap second: the models decide
    ("2024-05-01T10:00:00.1234567Z", False),  # more decimals than we vouch for
    ("2024-05-01T10:00:00+14:01", False),
    ("2024-05-01T10:00:00+15:00", False),
    ("2024-05-01T10:00Z", False),
    ("0000-01-01T00:00:00Z", False),
    ("2024-05-01t10:00:00z", False),
    ("2024-05-01T10:00:00 Z", False),
    ("2024-05-01T10:00:00Z ", False),
    ("2024-05-01 10:00:00Z", False),
]


@pytest.mark.parametrize(("value", "fast"), _TIMESTAMPS)
def test_timestamps_take_the_fast_path_only_where_the_models_accept_them(value, fast):
    date_time = {**PATIENT, "deceasedDateTime": value}
    instant = {
        "resourceType": "Provenance",
        "target": [{"reference": "Patient/1"}],
        "recorded": value,
        "agent": [{"who": {"display": "x"}}],
    }
    for body in (date_time, instant):
        assert plainly_valid(body) is fast
        if fast:
            assert models_accept(body)
        else:  # whatever the verdict, it is the models'
            check = models_accept(body)
            assert check == _accepts(check_resource, body)


def _accepts(validate: Any, body: dict[str, Any]) -> bool:
    try:
        validate(body)
    except Unprocessable:
        return False
    return True


_VALUES: list[Any] = [
    *("", " ", "a", "a  b", " a", "a ", "\t", "a\tb", "\x0b", "a\x0bb", "\u00a0", "x\u2028"),
    *("é", "2024-02-30", "2024-02-29", "2023-02-29", "0000-01-01", "0999-12-31", "2024-13-01"),
    *("2024-1-1", "20240101", "2024", "2024-05", "2024-05-01T10:00:00Z", "2024-05-01T10:00:00"),
    *("2024-02-30T10:00:00Z", "2016-12-31T23:59:60Z", "2024-05-01T10:00:00.5+05:30"),
    *("urn:x y", "http://x", "Patient/1", "a" * 65, "ok.id-1", "true", "1", "-1", "1.5"),
    *(0, 1, -1, 2**31, 2**31 - 1, -(2**31) - 1, 1.5, -0.0, 1e300, 1e-7, float("nan")),
    *(float("inf"), True, False, None, [], {}, [None], {"x": 1}, ["a"], [1]),
    {"coding": [{"code": "x"}]},
    {"reference": "Patient/1"},
    {"system": "urn:x", "code": "a b"},
    {"value": 1.5, "currency": "USD"},
    {"start": "2024-01-01"},
]
_KEYS = [
    *("servicedPeriod", "servicedDate", "valueString", "valueQuantity", "_status", "_system"),
    *("extension", "id", "foo", "resourceType", "performedDateTime", "effectiveDateTime"),
    *("fhir_comments", "resource_type", "class_fhir", "text", "display", "code", "system"),
    *("reference", "sequence", "contained", "modifierExtension", "url", "valueBoolean"),
]


def _spots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """(container, key or index) of every value inside `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((node, key))
            _spots(value, out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((node, i))
            _spots(value, out)
    return out


def _mutate(body: dict[str, Any], rng: random.Random) -> None:
    spots = _spots(body, [])
    container, key = rng.choice(spots)
    action = rng.randrange(6)
    if action == 0:
        container[key] = copy.deepcopy(rng.choice(_VALUES))
    elif action == 1:
        del container[key]
    elif action == 2:  # a sibling element
        target = container if isinstance(container, dict) else body
        target[rng.choice(_KEYS)] = copy.deepcopy(rng.choice(_VALUES))
    elif action == 3:
        container[key] = [container[key]]
    elif action == 4 and isinstance(container[key], list) and container[key]:
        container[key] = container[key][0]
    else:  # a sibling of another type: a dict element's key in another dict
        donor = rng.choice(spots)
        if isinstance(donor[0], dict) and isinstance(container, dict):
            container[donor[1]] = copy.deepcopy(donor[0][donor[1]])


def test_the_fast_path_never_accepts_what_the_models_reject(tmp_path):
    """Mutants of mapped resources (wrong types, bad dates and codes, nulls, empty arrays,
    unknown and duplicated choice elements, ...): whenever plainly_valid accepts one, the
    models accept it too; and it does accept many of the valid ones."""
    bodies = mapped_resources(tmp_path)
    rng = random.Random(20240501)
    rejected = fast = 0
    for _ in range(3000):
        body = copy.deepcopy(rng.choice(bodies))
        for _ in range(rng.choice((1, 1, 2, 3))):
            _mutate(body, rng)
        valid = models_accept(body)
        if plainly_valid(body):
            fast += 1
            assert valid, body
        rejected += not valid
    assert rejected > 800  # the mutants do probe the models' rules
    assert fast > 500  # and the fast path is not simply refusing everything


PATIENT = {"resourceType": "Patient"}


def _nested_extension(levels: int) -> dict[str, Any]:
    inner: dict[str, Any] = {"url": "urn:x", "valueString": "v"}
    for _ in range(levels):
        inner = {"url": "urn:x", "extension": [inner]}
    return inner


EOB = {
    "resourceType": "ExplanationOfBenefit",
    "status": "active",
    "type": {"coding": [{"system": "urn:x", "code": "professional"}]},
    "use": "claim",
    "patient": {"reference": "Patient/1"},
    "created": "2024-01-01",
    "insurer": {"reference": "Organization/1"},
    "provider": {"display": "x"},
    "outcome": "complete",
    "insurance": [{"focal": True, "coverage": {"display": "x"}}],
}


@pytest.mark.parametrize(
    ("body", "fast"),
    [
        (PATIENT, True),
        ({**PATIENT, "name": [{"family": "O'Brien-Sánchez", "given": ["A B"]}]}, True),
        ({**PATIENT, "name": [{"family": "a\tb"}]}, False),  # valid, but left to the models
        ({**PATIENT, "gender": "female"}, True),
        ({**PATIENT, "birthDate": "2024-02-29"}, True),
        ({**PATIENT, "birthDate": "2024-05"}, False),  # valid partial date: the models decide
        ({**PATIENT, "id": "abc-1.2"}, True),
        ({**PATIENT, "active": True}, True),
        ({**PATIENT, "active": "true"}, False),  # the models coerce it; we do not vouch
        ({**PATIENT, "name": []}, False),
        ({**PATIENT, "gender": None}, False),
        ({**PATIENT, "_gender": {"extension": [{"url": "urn:x", "valueString": "x"}]}}, False),
        (EOB, True),
        ({**EOB, "item": [{"sequence": 1, "productOrService": {"text": "x"}}]}, True),
        (
            {
                **EOB,
                "item": [
                    {"sequence": 1, "productOrService": {"text": "x"}, "quantity": {"value": 2.5}}
                ],
            },
            True,
        ),  # noqa: E501
        (
            {
                **EOB,
                "insurance": [{"focal": True, "coverage": {"display": "x"}, "preAuthRef": ["a"]}],
            },
            True,
        ),  # noqa: E501
        ({**EOB, "contained": [{"resourceType": "Patient", "id": "p"}]}, True),
        ({**PATIENT, "extension": [_nested_extension(10)]}, True),
        # valid, but nested deeper than the walk follows: the models (whose stack may run
        # out on such a resource, and then reject it) decide
        ({**PATIENT, "extension": [_nested_extension(30)]}, False),
    ],
)
def test_valid_bodies(body, fast):
    assert models_accept(body)
    assert plainly_valid(body) is fast
    check_resource(body)


@pytest.mark.parametrize(
    "body",
    [
        {**PATIENT, "gender": "a  b"},
        {**PATIENT, "gender": " female"},
        {**PATIENT, "gender": 5},
        {**PATIENT, "name": [{"family": ""}]},
        {**PATIENT, "name": [{"family": "\u00a0"}]},
        {**PATIENT, "name": {"family": "x"}},
        {**PATIENT, "birthDate": "2024-02-30"},
        {**PATIENT, "birthDate": "0000-01-01"},
        {**PATIENT, "foo": 1},
        {**PATIENT, "resourceType": "Patients"},
        {**EOB, "created": "not a date"},
        {**EOB, "item": [{"sequence": 0, "productOrService": {"text": "x"}}]},
        {**EOB, "item": [{"sequence": 2**31, "productOrService": {"text": "x"}}]},
        {
            **EOB,
            "item": [
                {
                    "sequence": 1,
                    "productOrService": {"text": "x"},
                    "servicedDate": "2024-01-01",
                    "servicedPeriod": {"start": "2024-01-01"},
                }
            ],
        },  # noqa: E501
        {
            **EOB,
            "item": [
                {
                    "sequence": 1,
                    "productOrService": {"text": "x"},
                    "quantity": {"value": float("inf")},
                }
            ],
        },  # noqa: E501
        {k: v for k, v in EOB.items() if k != "patient"},
        {k: v for k, v in EOB.items() if k != "outcome"},
        {**EOB, "contained": [{"resourceType": "Patient", "id": "p", "foo": 1}]},
    ],
)
def test_invalid_bodies_get_the_models_diagnostics(body):
    assert not plainly_valid(body)
    with pytest.raises(Unprocessable) as caught:
        check_resource(body)
    with pytest.raises(Unprocessable) as direct:
        validate_resource(body)
    assert caught.value.issues == direct.value.issues
