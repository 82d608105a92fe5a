"""Typed dependencies: what a route needs from the running daemon, named in its signature.

The lifespan in ``app.server`` builds one store, registry, ingestor, update worker and metrics per
daemon and keeps them on ``app.state``; routes take them through these providers, so a signature says
what a route touches and a test may override any of them (``app.dependency_overrides``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from app.events import EventHub
from app.ingest import Ingestor
from app.metrics import Metrics
from app.registry import Registry
from app.settings import Settings
from app.store import Store
from app.templates import TemplateBooks
from app.worker import UpdateWorker


def _from_state(name: str) -> Callable[[Request], Any]:
    def provide(request: Request) -> Any:
        return getattr(request.app.state, name)

    provide.__name__ = name
    return provide


# Module-level providers, so that ``app.dependency_overrides[deps.store]`` finds the one in use.
store = _from_state("store")
registry = _from_state("registry")
ingestor = _from_state("ingestor")
worker = _from_state("worker")
metrics = _from_state("metrics")
settings = _from_state("settings")
templates = _from_state("templates")
events = _from_state("events")

StoreDep = Annotated[Store, Depends(store)]
RegistryDep = Annotated[Registry, Depends(registry)]
IngestorDep = Annotated[Ingestor, Depends(ingestor)]
WorkerDep = Annotated[UpdateWorker, Depends(worker)]
MetricsDep = Annotated[Metrics, Depends(metrics)]
SettingsDep = Annotated[Settings, Depends(settings)]
TemplatesDep = Annotated[TemplateBooks, Depends(templates)]
EventsDep = Annotated[EventHub, Depends(events)]
