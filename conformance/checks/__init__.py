"""The check groups, one module each; `conformance.registry` lists them in running order."""
