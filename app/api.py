"""The v1 REST routes. Every route under /v1 needs a token; roles are checked per route."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status

from app.auth import requires
from app.deps import IngestorDep, MetricsDep, RegistryDep, StoreDep, WorkerDep
from app.metrics import Metrics
from app.modalities import MODALITIES
from app.registry import AlreadyRetracted, LiveModel, PredatesRollback, Registry, UnknownCheckpoint
from app.schemas import (
    PATIENT_ID,
    ROW_ID_MAX,
    CheckpointOut,
    CheckpointsOut,
    EnergyOut,
    EnergyRow,
    EnergySummaryOut,
    EnergyTotal,
    ErrorOut,
    LabelHistory,
    LabelIn,
    LabelOut,
    LabelsIn,
    LabelsOut,
    LabelUpdate,
    Modality,
    ModelOut,
    ModelsOut,
    Prequential,
    QueueItem,
    QueueOut,
    RollbackIn,
    TokenIn,
    TokenOut,
    TrendOut,
    TrendPoint,
    UndoIn,
    UndoOut,
    WindowDetail,
    WindowsOut,
)
from app.segment_body import SegmentBody, openapi_request_body, segment_body
from app.store import LabelRow, Store, Token, WindowGone, stored_samples
from app.worker import UpdateWorker
from signals.errors import SegmentConflict, SegmentRejected


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI entries for the error answers a route can give; all share the ``ErrorOut`` body."""
    meaning = {
        400: "The body is not decodable JSON",
        401: "Missing, unknown or revoked token",
        403: "The token's role may not do this, or a cookie-borne write came from another origin",
        404: "No such window, label or model",
        409: "Conflicts with what is stored",
        413: "The body is larger than BIOFO_MAX_BODY_BYTES",
        415: "The body is not application/json (nor, where a route takes it, application/octet-stream)",
        503: "The database cannot take writes (for example a full disk); nothing was written",
    }
    return {code: {"model": ErrorOut, "description": meaning[code]} for code in codes}


# Every /v1 route needs a token, and any write may meet a database that cannot take it.
router = APIRouter(prefix="/v1", responses=error_responses(401, 403, 503))
BODY_ERRORS = error_responses(400, 413, 415)
RowId = Annotated[int, Path(ge=1, le=ROW_ID_MAX)]

Device = Annotated[Token, Depends(requires("device"))]
Clinician = Annotated[Token, Depends(requires("clinician"))]
Admin = Annotated[Token, Depends(requires())]


def _unprocessable(field: list[str | int], message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_ENTITY,
        detail=[{"loc": ["body", *field], "msg": message, "type": "value_error"}],
    )


@router.post(
    "/windows", status_code=status.HTTP_201_CREATED, response_model=WindowsOut,
    responses={200: {"model": WindowsOut, "description": "This segment was accepted before: the stored windows"},
               **BODY_ERRORS, **error_responses(409),
               # The body is read by a dependency (JSON or binary), so FastAPI does not list its 422 itself.
               422: {"description": "A field is missing or invalid (named in `detail`)",
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}},
    openapi_extra=openapi_request_body(),
)
def post_windows(
    token: Device, segment: Annotated[SegmentBody, Depends(segment_body)], response: Response,
    ingestor: IngestorDep, metrics: MetricsDep,
) -> WindowsOut:
    """Store a segment, cut it into beats (ECG) or windows (EEG) and predict each one.

    The body is JSON (`WindowsIn`) or binary: `application/octet-stream` samples with the rest in
    the `X-Biofo-Segment` header (`BinarySegmentMeta`). Re-sending a segment already accepted
    (same `start`, in either form) returns the stored windows with 200.
    """
    try:
        out, created = ingestor.ingest(segment.meta, segment.samples)
    except SegmentConflict as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=[
            {"loc": ["body", error.field], "msg": str(error), "type": "conflict"}]) from error
    except SegmentRejected as error:
        raise _unprocessable([error.field], str(error)) from error
    if created:
        metrics.windows.labels(segment.meta.modality).inc(len(out.windows))
    else:
        response.status_code = status.HTTP_200_OK
    return out


@router.post("/labels", status_code=status.HTTP_202_ACCEPTED, response_model=LabelsOut,
             responses={**BODY_ERRORS, **error_responses(404)})
def post_labels(
    body: LabelsIn, token: Clinician, store: StoreDep, registry: RegistryDep, metrics: MetricsDep, worker: WorkerDep
) -> LabelsOut:
    """Append labels; they are durable when this returns, and the update worker applies them in order."""
    return accept_labels(body.labels, token, store, registry, metrics, worker)


def accept_labels(
    items: list[LabelIn], token: Token, store: Store, registry: Registry, metrics: Metrics, worker: UpdateWorker
) -> LabelsOut:
    """Store labels in the order given, one row each, and wake the update worker: every action that
    labels windows (one label, a template, an interval) comes through here."""
    windows = store.windows_by_id([item.window_id for item in items])
    rows = []
    first_index: dict[int, int] = {}
    for index, item in enumerate(items):
        # Two labels for one window in one request leave "latest wins" to the order of a list.
        earlier = first_index.setdefault(item.window_id, index)
        if earlier != index:
            raise _unprocessable(
                ["labels", index, "window_id"],
                f"window {item.window_id} is already labelled by labels[{earlier}]; one label per window per request",
            )
        window = windows.get(item.window_id)
        if window is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                detail=[{"loc": ["body", "labels", index, "window_id"],
                         "msg": f"no window with id {item.window_id}", "type": "not_found"}],
            )
        classes = registry.by_id(window["model_id"]).classes
        if item.label not in classes:
            raise _unprocessable(
                ["labels", index, "label"],
                f"'{item.label}' is not a {window['modality'].upper()} class; use one of {list(classes)}",
            )
        rows.append((item.window_id, window["model_id"], item.label, item.labeled_by, token.id))
    try:
        label_ids = store.insert_labels(rows)
    except WindowGone as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(error)) from error
    for item in items:
        window = windows[item.window_id]
        registry.note_label(window["model_id"], item.window_id, item.label, window["predicted"])
    metrics.labels.inc(len(label_ids))
    worker.notify()
    return LabelsOut(accepted=len(label_ids), update_seq=label_ids[-1], label_ids=label_ids)


@router.get("/windows", response_model=QueueOut)
def list_windows(
    token: Clinician,
    store: StoreDep,
    patient_id: Annotated[str | None, Query(pattern=PATIENT_ID.pattern)] = None,
    modality: Modality | None = None,
    labeled: bool | None = None,
    order: Literal["uncertainty", "time", "recent"] = "uncertainty",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=ROW_ID_MAX)] = 0,
) -> QueueOut:
    """The labelling queue: smallest top-1/top-2 margin first by default."""
    rows = store.queue(patient_id, modality, labeled, order, limit, offset)
    return QueueOut(windows=[_queue_item(row) for row in rows])


def _queue_item(row: dict) -> QueueItem:
    return QueueItem(
        id=row["id"], patient_id=row["patient_id"], modality=row["modality"], offset_s=row["offset_s"],
        predicted=row["predicted"], probabilities=json.loads(row["probabilities"]), margin=row["margin"],
        model_version=row["model_version"], label=row["label"], labeled_by=row["labeled_by"],
    )


@router.get("/windows/{window_id}", response_model=WindowDetail, responses=error_responses(404))
def get_window(window_id: RowId, token: Clinician, store: StoreDep) -> WindowDetail:
    """One window with its samples (a few seconds of context for ECG beats) and label history."""
    row = store.window(window_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no window with id {window_id}")
    labels = store.label_history(window_id)
    samples = stored_samples(row)
    latest = next((label for label in reversed(labels) if not label["retracted"]), None)
    modality = MODALITIES[row["modality"]]
    channels = json.loads(row["channels"])

    return WindowDetail(
        id=row["id"], patient_id=row["patient_id"], modality=row["modality"], offset_s=row["offset_s"],
        predicted=row["predicted"], probabilities=json.loads(row["probabilities"]), margin=row["margin"],
        model_version=row["model_version"], label=latest["label"] if latest else None,
        labeled_by=latest["labeled_by"] if latest else None, fs=row["fs"],
        channels=channels, start=row["start"], sample_channels=modality.plot_channels(channels, row["n_channels"]),
        samples=[] if samples is None else np.round(samples.astype(np.float64), 5).tolist(),
        samples_pruned_at=row["samples_pruned_at"], marker=row["marker"],
        samples_fs=modality.plot_fs,
        labels=[LabelHistory(**{**label, "retracted": bool(label["retracted"])}) for label in labels],
    )


@router.get("/labels/{label_id}", response_model=LabelOut, responses=error_responses(404))
def get_label(label_id: RowId, token: Clinician, store: StoreDep, registry: RegistryDep) -> LabelOut:
    """One label: whether the model has processed it, the update that learned it, and its retraction."""
    row = store.label(label_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no label with id {label_id}")
    update = None
    if row["update_id"] is not None:
        update = LabelUpdate(
            id=row["update_id"], version_before=row["version_before"], version_after=row["version_after"],
            duration_s=row["duration_s"], joules=row["joules"], energy_source=row["energy_source"],
        )
    retracted = row["retraction_id"] is not None
    return LabelOut(
        id=row["id"], window_id=row["window_id"], modality=row["modality"], patient_id=row["patient_id"],
        label=row["label"], labeled_by=row["labeled_by"], at=row["at"], retracted=retracted, update=update,
        applied=update is not None or retracted or registry.by_id(row["model_id"]).applied_seq >= row["id"],
    )


@router.post("/labels/{label_id}/undo", response_model=UndoOut, responses={**BODY_ERRORS, **error_responses(404, 409)})
def undo_label(
    label_id: RowId, token: Clinician, store: StoreDep, registry: RegistryDep, metrics: MetricsDep,
    body: UndoIn | None = None,
) -> UndoOut:
    """Retract a label. The label row stays (append-only); a retraction row is appended and the model is
    rebuilt without the label: newest checkpoint before it + replay of the later labels, as one new version."""
    row = store.label(label_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no label with id {label_id}")
    label = LabelRow(**{key: row[key] for key in ("id", "window_id", "model_id", "label", "labeled_by", "at")})
    by = body.retracted_by if body is not None and body.retracted_by else token.name
    try:
        done = registry.retract(label, token.id, by)
    except (AlreadyRetracted, PredatesRollback) as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from error
    metrics.model_version.labels(row["modality"], row["patient_id"]).set(done.version_after)
    if done.energy_source is not None:
        metrics.joules.labels("update", done.energy_source).inc(done.joules)
    return UndoOut(
        label_id=label.id, window_id=label.window_id, retraction_id=done.id,
        version_before=done.version_before, version_after=done.version_after,
        rebuilt_from_version=done.rebuilt_from_version, replayed=done.replayed, duration_s=done.duration_s,
        joules=done.joules, energy_source=done.energy_source,
        window_label=store.label_in_force(label.window_id),
    )


def _live(registry: RegistryDep, modality: Modality, patient_id: str) -> LiveModel:
    """The patient's model named by the path, or 404."""
    live = registry.get(modality, patient_id)
    if live is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no {modality} model for patient '{patient_id}'")
    return live


# Routes name the token before the model, so that a caller without the right token learns nothing,
# not even whether the patient exists: dependencies resolve in the order of the parameters.
Live = Annotated[LiveModel, Depends(_live)]


def model_summary(store: Store, registry: Registry, live: LiveModel) -> ModelOut:
    """What a model is and has learned; an evicted model is described without loading its weights."""
    # Read before the counts: a label is applied only once its update row is committed, so the
    # counts taken after it include every update up to it.
    applied_seq = live.applied_seq
    return ModelOut(
        modality=live.row.modality, patient_id=live.row.patient_id, version=live.version,
        rule=live.row.rule, base=live.row.base, updates_applied=store.count_updates(live.row.id),
        labels_pending=store.count_labels_after(live.row.id, applied_seq), applied_seq=applied_seq,
        prequential=Prequential(**registry.prequential_summary(live)),
    )


@router.get("/models", response_model=ModelsOut)
def list_models(token: Clinician, store: StoreDep, registry: RegistryDep) -> ModelsOut:
    return ModelsOut(models=[model_summary(store, registry, live) for live in registry.all()])


@router.get("/models/{modality}/{patient_id}", response_model=ModelOut, responses=error_responses(404))
def get_model(token: Clinician, live: Live, store: StoreDep, registry: RegistryDep) -> ModelOut:
    return model_summary(store, registry, live)


@router.get("/models/{modality}/{patient_id}/prequential", response_model=TrendOut, responses=error_responses(404))
def prequential_trend(
    token: Clinician, live: Live, store: StoreDep, limit: Annotated[int, Query(ge=1, le=10000)] = 200,
) -> TrendOut:
    """Running prequential accuracy (prediction made before the label vs the label in force) after each
    label, oldest first; the last ``limit`` points, each computed over all labels before it."""
    points: list[TrendPoint] = []
    correct = 0
    for n, row in enumerate(store.prequential_trend(live.row.id), start=1):
        hit = row["predicted"] == row["label"]
        correct += hit
        points.append(TrendPoint(**row, correct=hit, n=n, accuracy=correct / n))
    return TrendOut(points=points[-limit:])


@router.get("/models/{modality}/{patient_id}/checkpoints", response_model=CheckpointsOut, responses=error_responses(404))
def list_checkpoints(token: Clinician, live: Live, registry: RegistryDep) -> CheckpointsOut:
    rows = registry.checkpoints(live)
    return CheckpointsOut(checkpoints=[CheckpointOut(**{k: row[k] for k in CheckpointOut.model_fields}) for row in rows])


@router.post("/models/{modality}/{patient_id}/rollback", response_model=ModelOut,
             responses={**BODY_ERRORS, **error_responses(404)})
def rollback(token: Admin, live: Live, body: RollbackIn, store: StoreDep, registry: RegistryDep) -> ModelOut:
    """Restore the weights of a checkpointed version as a new version; labels are never deleted."""
    try:
        registry.rollback(live, body.version, body.replay_later_labels)
    except UnknownCheckpoint as error:
        versions = sorted({row["version"] for row in registry.checkpoints(live)})
        raise _unprocessable(["version"], f"no checkpoint holds version {body.version}; checkpointed versions: {versions}") from error
    return model_summary(store, registry, live)


@router.get(
    "/models/{modality}/{patient_id}/onnx", response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The ONNX graph"}, **error_responses(404)},
)
def export_onnx(token: Clinician, live: Live, registry: RegistryDep) -> Response:
    """The current model's inference graph, for onnxruntime."""
    with registry.using(live) as learner:
        blob = learner.to_onnx()
        version = learner.version
    filename = f"biofo-{live.row.modality}-{live.row.patient_id}-v{version}.onnx"
    return Response(
        blob, media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "X-Model-Version": str(version)},
    )


@router.get("/energy", response_model=EnergyOut)
def energy_rows(
    token: Clinician,
    store: StoreDep,
    since: Annotated[float, Query(ge=0)] = 0.0,
    phase: Literal["inference", "update"] | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> EnergyOut:
    rows = store.energy_rows(since, phase, limit)
    return EnergyOut(energy=[EnergyRow(**row) for row in rows])


@router.get("/energy/summary", response_model=EnergySummaryOut)
def energy_summary(token: Clinician, store: StoreDep) -> EnergySummaryOut:
    """Totals per phase and source; figures from different sources are never added together."""
    rows = store.energy_totals()
    return EnergySummaryOut(
        totals=[EnergyTotal(**row, joules_per_item=row["joules"] / row["n"] if row["n"] else None) for row in rows]
    )


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenOut, responses=BODY_ERRORS)
def create_token(body: TokenIn, token: Admin, store: StoreDep) -> TokenOut:
    """Issue a token; it is shown once and stored only as a hash."""
    plaintext = store.create_token(body.name, body.role)
    return TokenOut(token=plaintext, role=body.role, name=body.name)
