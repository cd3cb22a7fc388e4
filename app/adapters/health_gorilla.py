"""Health Gorilla: federated FHIR whose patient record is DocumentReference + Binary.

What is public (../shared/reference/requirements.md §1.4 and §7 item 9, confidence S):
- "Federated FHIR": a participant registers its patients into Health Gorilla's MPI / record
  locator "by ADT or FHIR `POST Patient`"; on a query Health Gorilla gets an OAuth2
  client-credentials token and reads a `DocumentReference` Bundle for the patient, then each
  `Binary`. Sources: developer.healthgorilla.com/docs/federated-fhir;
  apidocs.healthgorilla.com/getting-started/platform-overview/standards (FHIR R4 normalized to
  US Core/USCDI, with `meta.profile`, LOINC/SNOMED/RxNorm).

So, over the generic adapter (app/adapters/fhir.py):
- fetch_record reads `DocumentReference?patient=` and the Binaries its attachments reference
  (capabilities.document_reference), not `$everything`;
- authentication is OAuth2 client credentials: the registry's `smart-backend` method
  (client_credentials with a private_key_jwt assertion) at the registered token URL. The exact
  client-authentication form Health Gorilla expects is not in the public sources we hold: the
  token URL, client id, key and scopes are registration data, never defaults in code;
- deliver registers the event's patient in Health Gorilla's MPI with a FHIR create,
  `POST [base]/Patient` with `If-None-Exist: identifier=system|value` (FHIR R4 conditional
  create, https://hl7.org/fhir/R4/http.html#ccreate), sending a minimal Patient (identifiers,
  name, birth date, gender, address, telecom; not our id). Channel "fhir-patient-registration".

The base URL is registration data too: no Health Gorilla address is written here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from app.adapters.base import (
    AdapterCapabilities,
    AdtEvent,
    DeliveryReceipt,
    FailureKind,
)
from app.adapters.fhir import FhirAdapter, escape_search_value, loop_time

__all__ = ["CAPABILITIES", "REGISTRATION_CHANNEL", "HealthGorillaAdapter"]

REGISTRATION_CHANNEL = "fhir-patient-registration"
CAPABILITIES = AdapterCapabilities(
    identifier_search=True,
    patient_match=False,
    everything=False,
    document_reference=True,
    event_channels=frozenset({REGISTRATION_CHANNEL}),
    types=frozenset({"Patient", "DocumentReference", "Binary"}),
)
_KEPT = ("identifier", "name", "birthDate", "gender", "address", "telecom")


class HealthGorillaAdapter(FhirAdapter):
    def capabilities(self) -> AdapterCapabilities:
        caps = self.config.capabilities
        # the record shape is what makes this adapter; other settings may be overridden
        return AdapterCapabilities(
            identifier_search=caps.identifier_search,
            patient_match=caps.patient_match,
            everything=False,
            document_reference=True,
            event_channels=caps.event_channels or CAPABILITIES.event_channels,
            types=caps.types or CAPABILITIES.types,
        )

    async def deliver(self, event: AdtEvent) -> DeliveryReceipt:
        if REGISTRATION_CHANNEL not in self.capabilities().event_channels:
            return await super().deliver(event)
        body = registration_patient(event.patient)
        headers = {}
        identifiers = [i for i in body.get("identifier", ()) if i.get("value")]
        if not identifiers:
            raise self._error(
                FailureKind.UNSUPPORTED, "the patient has no identifier to register it by"
            )
        first = identifiers[0]
        value = escape_search_value(first["value"])
        if first.get("system"):
            value = f"{escape_search_value(first['system'])}|{value}"
        headers["If-None-Exist"] = f"identifier={quote(value, safe='|:/')}"
        reply = await self._call(
            "POST", "Patient", json_body=body, started=loop_time(), extra_headers=headers
        )
        remote_id = reply.body.get("id") if isinstance(reply.body, dict) else None
        return DeliveryReceipt(
            accepted=True,
            detail=f"HTTP {reply.status}",
            remote_id=remote_id if isinstance(remote_id, str) else None,
        )


def registration_patient(patient: dict[str, Any]) -> dict[str, Any]:
    """The Patient sent to Health Gorilla's MPI: demographics and identifiers only."""
    out: dict[str, Any] = {"resourceType": "Patient"}
    for name in _KEPT:
        if patient.get(name):
            out[name] = patient[name]
    return out
