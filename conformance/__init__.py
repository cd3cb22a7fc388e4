"""Conformance kit: checks a FHIR R4 server against what its own CapabilityStatement claims.

`run_kit(base_url, ...)` runs the check groups in `registry.GROUPS` and returns a `Report`;
`dxf-bridge conformance BASE_URL` is the command line over it (see conformance/README.md).
"""

from conformance.model import Evidence, Outcome, Result, Rule
from conformance.registry import GROUPS
from conformance.report import render_html, render_json, write_report
from conformance.runner import Report, run_kit

__all__ = [
    "GROUPS",
    "Evidence",
    "Outcome",
    "Report",
    "Result",
    "Rule",
    "render_html",
    "render_json",
    "run_kit",
    "write_report",
]
