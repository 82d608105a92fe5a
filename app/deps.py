"""Typed dependencies: what a route needs from the running daemon, named in its signature.

The lifespan in ``app.server`` builds one store, registry, ingestor, update worker and metrics per
daemon and keeps them on ``app.state``; routes take them through these providers, so a signature says
what a route touches and a test may override any of them (``app.dependency_overrides``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.ingest import Ingestor
from app.metrics import Metrics
from app.registry import Registry
from app.settings import Settings
from app.store import Store
from app.worker import UpdateWorker


def store(request: Request) -> Store:
    return request.app.state.store


def registry(request: Request) -> Registry:
    return request.app.state.registry


def ingestor(request: Request) -> Ingestor:
    return request.app.state.ingestor


def worker(request: Request) -> UpdateWorker:
    return request.app.state.worker


def metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def settings(request: Request) -> Settings:
    return request.app.state.settings


StoreDep = Annotated[Store, Depends(store)]
RegistryDep = Annotated[Registry, Depends(registry)]
IngestorDep = Annotated[Ingestor, Depends(ingestor)]
WorkerDep = Annotated[UpdateWorker, Depends(worker)]
MetricsDep = Annotated[Metrics, Depends(metrics)]
SettingsDep = Annotated[Settings, Depends(settings)]
