"""APCD-CDL claims import: layouts as data, a streaming reader and validator, the mapping to FHIR
R4 (CARIN Blue Button shapes), and the importer that writes through the repository.

Spec: APCD Council / NAHDO Common Data Layout v3.0.1 (v2.1 for older files), as restated in the
project's reference notes; design in docs/architecture.md ("APCD-CDL import").
"""
