"""Adapter directories (app.adapters.base.AdapterDirectory) that need no registry.

`NoIntermediaries` is what the container uses until an intermediary registry is wired: every
federated read is then the local one. `StaticDirectory` serves a fixed list, for tests,
benchmarks and deployments that build their adapters in code.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.adapters.base import IntermediaryAdapter

__all__ = ["NoIntermediaries", "StaticDirectory"]


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
