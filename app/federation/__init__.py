"""Federated reads: a patient's record from this server and from every active intermediary.

- `federator.py`: asks every active adapter at once under one deadline, through a circuit
  breaker per endpoint (`breaker.py`), and turns every failure into a reportable result;
- `admission.py`: what of a remote answer the caller may see (the located patient's record
  only, within the token's scopes), whatever the intermediary sent;
- `merge.py`: remote resources made into Bundle entries (absolute fullUrl, meta.source, one
  Provenance per intermediary), exact duplicates dropped, problems as OperationOutcome issues;
- `directory.py`: adapter directories for when no registry is wired (none, or a fixed list).

docs/adapters.md ("Federated reads") describes the behaviour a client sees.
"""
