"""Write rules for types whose content the server acts on, beyond model validation.

A resource the server would store but could never act on is refused at write time with 422, so
the client learns it at once instead of finding it silently ignored:

- Subscription: a topic-based subscription the event dispatcher can serve (Subscriptions R5
  Backport IG STU 1.1; app/events/subscriptions.py).
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_rules"]


def check_rules(body: dict[str, Any], fhir_base: str) -> None:
    if body.get("resourceType") == "Subscription":
        from app.events.subscriptions import check_subscription

        check_subscription(body, fhir_base)
