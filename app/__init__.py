"""dxf-bridge: a FHIR R4 facade for California's Data Exchange Framework."""

__version__ = "0.1.0"
__all__ = ["__version__"]
