"""The FastAPI application and ``biofo serve``."""

from __future__ import annotations

import fcntl
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from starlette.routing import Match

from app.alarms import AlarmDetector, WebhookNotifier, alarm_payload
from app.api import Clinician, error_responses, router
from app.base_models import load_bases
from app.deps import MetricsDep
from app.energy import detect_meter
from app.engine import resolve_engine
from app.events import EventHub
from app.extraction import Extractor
from app.ingest import Ingestor, Limits
from app.limits import RequestLimits
from app.metrics import Metrics
from app.page import router as page_router
from app.registry import AppliedUpdate, LiveModel, Registry
from app.retention import Retention, RetentionPolicy
from app.review_api import router as review_router
from app.segment_body import add_schemas
from app.settings import Settings
from app.store import Store, StoreUnavailable
from app.templates import TemplateBooks
from app.wal_checkpoints import WalCheckpointer
from app.worker import UpdateWorker

log = logging.getLogger("biofo")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}
# Swagger UI (vendored) sets inline styles as it renders; only /docs allows them.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'"
)
DOCS_PAGE = Path(__file__).resolve().parent / "static" / "docs.html"


def ensure_admin(store: Store, settings: Settings) -> str | None:
    """On first start, create the admin token (``BIOFO_ADMIN_TOKEN`` if set); return it if new."""
    if store.has_admin():
        return None
    return store.create_token("admin", "admin", settings.admin_token)


def create_app(settings: Settings, clock: Callable[[], float] = time.time) -> FastAPI:
    """The daemon; ``clock`` is the store's (a soak runs days of streams in minutes by advancing it)."""
    engine = resolve_engine(settings.engine)
    hub = EventHub()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(settings.db, clock)
        new_admin = ensure_admin(store, settings)
        if new_admin is not None and not settings.admin_token:
            print(f"biofo: first start; admin token (shown once): {new_admin}", file=sys.stderr, flush=True)
        meter = detect_meter(settings.energy)
        registry = Registry(store, load_bases(), meter, settings.checkpoint_every, engine,
                            max_resident=settings.max_resident_models, idle_s=settings.model_idle_s)
        log.info("engine: %s", engine)
        replayed = registry.restore()
        if replayed:
            log.info("replayed %d labels after the newest checkpoints", replayed)
        metrics = Metrics()
        newest = store.newest_label_seq()

        def on_update(update: AppliedUpdate, label_to_update_s: float) -> None:
            live = registry.by_id(update.model_id)
            metrics.updates.labels(live.row.modality).inc()
            metrics.update_seconds.observe(update.duration_s)
            metrics.label_to_update_seconds.observe(label_to_update_s)
            metrics.model_version.labels(live.row.modality, live.row.patient_id).set(update.version_after)
            metrics.joules.labels("update", meter.source).inc(update.joules)
            hub.publish("model", {"modality": live.row.modality, "patient_id": live.row.patient_id,
                                  "version": update.version_after, "label_id": update.label_id})

        worker = UpdateWorker(store, registry, newest, on_update)
        detector = AlarmDetector(store, settings.alarm_webhooks)
        notifier = WebhookNotifier(store, settings.alarm_retry_s, settings.alarm_max_attempts)
        for live in registry.all():
            detector.recheck(live.row)

        def on_stored(live: LiveModel, windows: list[dict]) -> None:
            hub.publish("windows", {"modality": live.row.modality, "patient_id": live.row.patient_id,
                                    "windows": windows})
            try:
                raised = detector.observe(live.row, windows)
            except StoreUnavailable as error:
                # The windows are committed and the device must hear so; the alarm row is what failed.
                log.error("alarm check of %s/%s failed: %s", live.row.modality, live.row.patient_id, error)
                return
            for alarm_id in raised:
                hub.publish("alarm", alarm_payload(store.alarm(alarm_id)))
                notifier.notify()

        app.state.settings = settings
        app.state.store = store
        app.state.meter = meter
        app.state.registry = registry
        app.state.metrics = metrics
        app.state.worker = worker
        extractor = Extractor(settings.workers)
        app.state.ingestor = Ingestor(
            store, registry, meter, Limits(settings.max_samples, settings.max_segment_s), extractor, on_stored
        )
        app.state.templates = TemplateBooks(store)
        retention = Retention(store, RetentionPolicy.from_settings(settings))
        app.state.retention = retention
        wal = WalCheckpointer(store)
        app.state.wal = wal
        wal.start()
        worker.start()
        notifier.start()
        retention.start(settings.retain_every_s)
        try:
            yield
        finally:
            hub.close()
            retention.stop()
            notifier.stop()
            worker.stop()
            wal.stop()
            extractor.close()
            written = registry.checkpoint_all("shutdown")
            log.info("shutdown: %d checkpoints written", written)
            registry.close()
            meter.close()
            store.close()

    app = FastAPI(
        title="biofo",
        version="0.1.0",
        summary="Bedside ECG/EEG classification that learns from clinician labels with forward-only updates",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.events = hub
    generated = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            add_schemas(generated())
        return app.openapi_schema

    app.openapi = openapi
    app.include_router(router)
    app.include_router(review_router)
    app.include_router(page_router)

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(DOCS_PAGE, media_type="text/html")

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # Patient identifiers label the model-version gauge: /metrics needs the token a /v1 read needs.
    @app.get("/metrics", tags=["ops"], response_class=Response, responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}, **error_responses(401, 403)})
    def prometheus(token: Clinician, metrics: MetricsDep) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # The default handler echoes the offending input back: that can be megabytes of samples,
        # and NaN cannot be written as JSON at all. Name the field and the rule, nothing more.
        detail = [
            {"loc": list(item.get("loc", ())), "msg": str(item.get("msg", "")), "type": str(item.get("type", ""))}
            for item in error.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, error: StoreUnavailable) -> JSONResponse:
        log.error("store unavailable: %s", error)
        return JSONResponse(
            {"detail": f"storage unavailable, nothing was written: {error}"}, status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(405)
    async def method_not_allowed(request: Request, error: Exception) -> JSONResponse:
        # The router's own Allow names the methods of the first route that matched the path only; GET
        # and POST /v1/windows are two routes of one resource, and Allow must list both.
        allowed = [
            method for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                   for route in request.app.router.routes)
        ]
        return JSONResponse(
            {"detail": f"method {request.method} not allowed"}, 405, headers={"Allow": ", ".join(allowed)}
        )

    # Added before ``guard``, so it runs inside it: its refusals get the security headers too.
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path == "/docs":
            response.headers["Content-Security-Policy"] = DOCS_CSP
        route = request.scope.get("route")
        metrics_state = getattr(request.app.state, "metrics", None)
        if metrics_state is not None:
            metrics_state.request_seconds.labels(
                request.method, getattr(route, "path", "unmatched"), str(response.status_code)
            ).observe(time.perf_counter() - started)
        return response

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def serve(
    host: str | None = None, port: int | None = None, db: str | None = None, engine: str | None = None,
    workers: int | None = None, progress: bool = False,
) -> None:
    """``biofo serve``: run the daemon until SIGTERM or Ctrl-C; both checkpoint before exit."""
    import uvicorn

    settings = Settings.from_env(host=host, port=port, db=db, engine=engine, workers=workers)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A database that cannot be opened for writing (read-only file or filesystem, missing folder) or that
    # another daemon serves is a configuration error: say so, naming the file, instead of a traceback
    # from the application's startup.
    if settings.workers is not None and settings.workers < 0:
        print(f"biofo: cannot start: workers must be 0 or more, not {settings.workers}", file=sys.stderr, flush=True)
        raise SystemExit(2)
    try:
        instance = _instance_lock(settings.db)  # held until the process exits
        Store(settings.db).close()
    except (StoreUnavailable, RuntimeError) as error:
        print(f"biofo: cannot start: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal under the handler that was
    # in place before it started. Making that handler a clean exit turns a completed shutdown (worker
    # stopped, checkpoints written) into exit status 0, which is what supervisors expect.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    app = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            # Open event streams never end by themselves; end them now, or the graceful stop waits for them.
            app.state.events.close()
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        # Devices post every few seconds on a kept-alive connection; uvicorn's 5 s default closes it in
        # between, and a POST racing that close fails on the device with a reset connection.
        timeout_graceful_shutdown=30, timeout_keep_alive=75,
    ))
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        raise SystemExit(3)  # what uvicorn.run exits with when the app fails to start
    instance.close()


def _instance_lock(db: Path) -> IO[bytes]:
    """An exclusive lock beside the database for the life of this daemon.

    Two daemons on one database would each keep their own copy of a patient's model and apply labels
    the other accepted (or fail on models it forked): the durability invariant holds for one writer
    only. A supervisor that starts a new daemon while the old one still drains its requests hits this.
    """
    path = Path(f"{db}.lock")
    try:
        handle = path.open("ab")
    except OSError as error:
        raise RuntimeError(f"cannot create {path} beside the database {db}: {error.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RuntimeError(f"another biofo daemon is serving {db} (it holds {path})") from None
    return handle


def create_token(role: str, name: str, db: str | None = None, progress: bool = False) -> None:
    """``biofo token create``: print a new token once."""
    settings = Settings.from_env(db=db)
    store = Store(settings.db)
    try:
        print(store.create_token(name, role))
    finally:
        store.close()
