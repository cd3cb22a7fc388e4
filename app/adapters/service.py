"""The registry's parts wired together: storage, adapter factory, directory, checker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from app.adapters.base import AdtEvent
from app.adapters.checks import IntermediaryChecker
from app.adapters.factory import AdapterFactory
from app.adapters.fhir import MessageBuilder
from app.adapters.registry import IntermediaryRegistry, RegistryDirectory
from app.db import Database
from app.settings import Settings

__all__ = ["Intermediaries", "davinci_builder"]


def davinci_builder(fhir_base: str) -> MessageBuilder:
    """Da Vinci unsolicited-notification Bundles (app/events/davinci.py) from our FHIR base."""
    from app.events.davinci import build_notification_bundle

    def build(event: AdtEvent, destination: str) -> dict[str, Any]:
        return build_notification_bundle(event, fhir_base=fhir_base, destination=destination)

    return build


@dataclass(slots=True)
class Intermediaries:
    registry: IntermediaryRegistry
    factory: AdapterFactory
    directory: RegistryDirectory  # the AdapterDirectory federated reads and events use
    checker: IntermediaryChecker

    @classmethod
    def build(
        cls,
        db: Database,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        message_builder: MessageBuilder | None = None,
    ) -> Intermediaries:
        registry = IntermediaryRegistry(db, fhir_base_url=settings.fhir_base_url)
        if message_builder is None:
            message_builder = davinci_builder(settings.fhir_base_url)
        timeout = settings.intermediary_timeout_seconds
        factory = AdapterFactory(
            timeout_seconds=timeout, message_builder=message_builder, transport=transport
        )
        return cls(
            registry=registry,
            factory=factory,
            directory=RegistryDirectory(registry, factory),
            checker=IntermediaryChecker(
                registry, factory, timeout_seconds=timeout, transport=transport
            ),
        )

    async def aclose(self) -> None:
        await self.directory.aclose()
        await self.factory.aclose()
