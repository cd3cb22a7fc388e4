"""Adapter directories (app.adapters.base.AdapterDirectory) that need no registry.

`NoIntermediaries`: every federated read is the local one. `StaticDirectory` serves a fixed
list, for tests, benchmarks and deployments that build their adapters in code. `LazyDirectory`
defers to a directory built on first use (the container's intermediary registry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from app.adapters.base import AdapterDirectory, IntermediaryAdapter

__all__ = ["LazyDirectory", "NoIntermediaries", "StaticDirectory"]


class NoIntermediaries:
    async def active(self) -> list[IntermediaryAdapter]:
        return []


class StaticDirectory:
    def __init__(self, adapters: Iterable[IntermediaryAdapter] = ()) -> None:
        self.adapters = list(adapters)

    async def active(self) -> list[IntermediaryAdapter]:
        return list(self.adapters)

    async def aclose(self) -> None:
        for adapter in self.adapters:
            await adapter.aclose()


class LazyDirectory:
    def __init__(self, build: Callable[[], AdapterDirectory]) -> None:
        self._build = build

    async def active(self) -> list[IntermediaryAdapter]:
        return await self._build().active()
