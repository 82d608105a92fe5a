"""The v1 REST routes. Every route under /v1 needs a token; roles are checked per route."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status

from app.auth import requires
from app.ingest import SegmentRejected
from app.registry import AlreadyRetracted, LiveModel, PredatesRollback, UnknownCheckpoint
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
    WindowsIn,
    WindowsOut,
)
from app.store import LabelRow, Token


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI entries for the error answers a route can give; all share the ``ErrorOut`` body."""
    meaning = {
        400: "The body is not decodable JSON",
        401: "Missing, unknown or revoked token",
        403: "The token's role may not do this, or a cookie-borne write came from another origin",
        404: "No such window, label or model",
        409: "Conflicts with what is stored",
        413: "The body is larger than BIOFO_MAX_BODY_BYTES",
        415: "The body is not application/json",
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
               **BODY_ERRORS, **error_responses(409)},
)
def post_windows(body: WindowsIn, request: Request, response: Response, token: Device) -> WindowsOut:
    """Store a segment, cut it into beats (ECG) or windows (EEG) and predict each one.

    Re-sending a segment already accepted (same ``start``) returns the stored windows with 200.
    """
    try:
        out, created = request.app.state.ingestor.ingest(body)
    except SegmentRejected as error:
        if error.field == "start":
            raise HTTPException(status.HTTP_409_CONFLICT, detail=[
                {"loc": ["body", "start"], "msg": str(error), "type": "conflict"}]) from error
        raise _unprocessable([error.field], str(error)) from error
    if created:
        request.app.state.metrics.windows.labels(body.modality).inc(len(out.windows))
    else:
        response.status_code = status.HTTP_200_OK
    return out


@router.post("/labels", status_code=status.HTTP_202_ACCEPTED, response_model=LabelsOut,
             responses={**BODY_ERRORS, **error_responses(404)})
def post_labels(body: LabelsIn, request: Request, token: Clinician) -> LabelsOut:
    """Append labels; they are durable when this returns, and the update worker applies them in order."""
    state = request.app.state
    windows = state.store.windows_by_id([item.window_id for item in body.labels])
    rows = []
    first_index: dict[int, int] = {}
    for index, item in enumerate(body.labels):
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
        classes = state.registry.by_id(window["model_id"]).classes
        if item.label not in classes:
            raise _unprocessable(
                ["labels", index, "label"],
                f"'{item.label}' is not a {window['modality'].upper()} class; use one of {list(classes)}",
            )
        rows.append((item.window_id, window["model_id"], item.label, item.labeled_by, token.id))
    label_ids = state.store.insert_labels(rows)
    state.metrics.labels.inc(len(label_ids))
    state.worker.notify()
    return LabelsOut(accepted=len(label_ids), update_seq=label_ids[-1], label_ids=label_ids)


@router.get("/windows", response_model=QueueOut)
def list_windows(
    request: Request,
    token: Clinician,
    patient_id: Annotated[str | None, Query(pattern=PATIENT_ID.pattern)] = None,
    modality: Modality | None = None,
    labeled: bool | None = None,
    order: Literal["uncertainty", "time", "recent"] = "uncertainty",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=ROW_ID_MAX)] = 0,
) -> QueueOut:
    """The labelling queue: smallest top-1/top-2 margin first by default."""
    rows = request.app.state.store.queue(patient_id, modality, labeled, order, limit, offset)
    return QueueOut(windows=[_queue_item(row) for row in rows])


def _queue_item(row: dict) -> QueueItem:
    return QueueItem(
        id=row["id"], patient_id=row["patient_id"], modality=row["modality"], offset_s=row["offset_s"],
        predicted=row["predicted"], probabilities=json.loads(row["probabilities"]), margin=row["margin"],
        model_version=row["model_version"], label=row["label"], labeled_by=row["labeled_by"],
    )


@router.get("/windows/{window_id}", response_model=WindowDetail, responses=error_responses(404))
def get_window(window_id: RowId, request: Request, token: Clinician) -> WindowDetail:
    """One window with its samples (a few seconds of context for ECG beats) and label history."""
    store = request.app.state.store
    row = store.window(window_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no window with id {window_id}")
    labels = store.label_history(window_id)
    samples = np.frombuffer(row["samples"], dtype=np.float32).reshape(row["n_channels"], row["n_samples"])
    latest = next((label for label in reversed(labels) if not label["retracted"]), None)
    from signals.ecg_features import ECG_FS
    from signals.eeg_features import CANONICAL_CHANNELS, EEG_FS

    channels = json.loads(row["channels"])
    if row["modality"] == "eeg":
        sample_channels = list(CANONICAL_CHANNELS)
    elif len(channels) == row["n_channels"]:
        sample_channels = channels
    else:
        sample_channels = [f"lead {index + 1}" for index in range(row["n_channels"])]

    return WindowDetail(
        id=row["id"], patient_id=row["patient_id"], modality=row["modality"], offset_s=row["offset_s"],
        predicted=row["predicted"], probabilities=json.loads(row["probabilities"]), margin=row["margin"],
        model_version=row["model_version"], label=latest["label"] if latest else None,
        labeled_by=latest["labeled_by"] if latest else None, fs=row["fs"],
        channels=channels, start=row["start"], sample_channels=sample_channels,
        samples=np.round(samples.astype(np.float64), 5).tolist(), marker=row["marker"],
        samples_fs=ECG_FS if row["modality"] == "ecg" else EEG_FS,
        labels=[LabelHistory(**{**label, "retracted": bool(label["retracted"])}) for label in labels],
    )


@router.get("/labels/{label_id}", response_model=LabelOut, responses=error_responses(404))
def get_label(label_id: RowId, request: Request, token: Clinician) -> LabelOut:
    """One label: whether the model has processed it, the update that learned it, and its retraction."""
    state = request.app.state
    row = state.store.label(label_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no label with id {label_id}")
    update = None
    if row["update_seq"] is not None:
        update = LabelUpdate(
            seq=row["update_seq"], version_before=row["version_before"], version_after=row["version_after"],
            duration_s=row["duration_s"], joules=row["joules"], energy_source=row["energy_source"],
        )
    retracted = row["retraction_id"] is not None
    return LabelOut(
        id=row["id"], window_id=row["window_id"], modality=row["modality"], patient_id=row["patient_id"],
        label=row["label"], labeled_by=row["labeled_by"], at=row["at"], retracted=retracted, update=update,
        applied=update is not None or retracted or state.registry.by_id(row["model_id"]).applied_seq >= row["id"],
    )


@router.post("/labels/{label_id}/undo", response_model=UndoOut, responses={**BODY_ERRORS, **error_responses(404, 409)})
def undo_label(label_id: RowId, request: Request, token: Clinician, body: UndoIn | None = None) -> UndoOut:
    """Retract a label. The label row stays (append-only); a retraction row is appended and the model is
    rebuilt without the label: newest checkpoint before it + replay of the later labels, as one new version."""
    state = request.app.state
    row = state.store.label(label_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no label with id {label_id}")
    label = LabelRow(**{key: row[key] for key in ("id", "window_id", "model_id", "label", "labeled_by", "at")})
    by = body.retracted_by if body is not None and body.retracted_by else token.name
    try:
        done = state.registry.retract(label, token.id, by)
    except (AlreadyRetracted, PredatesRollback) as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from error
    state.metrics.model_version.labels(row["modality"], row["patient_id"]).set(done.version_after)
    if done.energy_source is not None:
        state.metrics.joules.labels("update", done.energy_source).inc(done.joules)
    return UndoOut(
        label_id=label.id, window_id=label.window_id, retraction_id=done.id,
        version_before=done.version_before, version_after=done.version_after,
        rebuilt_from_version=done.rebuilt_from_version, replayed=done.replayed, duration_s=done.duration_s,
        joules=done.joules, energy_source=done.energy_source,
        window_label=state.store.label_in_force(label.window_id),
    )


def _live(request: Request, modality: str, patient_id: str) -> LiveModel:
    live = request.app.state.registry.get(modality, patient_id)
    if live is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no {modality} model for patient '{patient_id}'")
    return live


def model_summary(request: Request, live: LiveModel) -> ModelOut:
    state = request.app.state
    rows = state.store.prequential(live.row.id)
    per_class: dict[str, dict[str, int]] = {c: {"n": 0, "correct": 0, "predicted": 0} for c in live.classes}
    correct = 0
    for row in rows:
        per_class[row["label"]]["n"] += 1
        per_class[row["predicted"]]["predicted"] += 1
        if row["predicted"] == row["label"]:
            per_class[row["label"]]["correct"] += 1
            correct += 1
    return ModelOut(
        modality=live.row.modality, patient_id=live.row.patient_id, version=live.learner.version,
        rule=live.learner.rule, base=live.row.base, updates_applied=state.store.count_updates(live.row.id),
        labels_pending=state.store.count_labels_after(live.row.id, live.applied_seq), applied_seq=live.applied_seq,
        prequential=Prequential(accuracy=correct / len(rows) if rows else None, n=len(rows), per_class=per_class),
    )


@router.get("/models", response_model=ModelsOut)
def list_models(request: Request, token: Clinician) -> ModelsOut:
    return ModelsOut(models=[model_summary(request, live) for live in request.app.state.registry.all()])


@router.get("/models/{modality}/{patient_id}", response_model=ModelOut, responses=error_responses(404))
def get_model(modality: Modality, patient_id: str, request: Request, token: Clinician) -> ModelOut:
    return model_summary(request, _live(request, modality, patient_id))


@router.get("/models/{modality}/{patient_id}/prequential", response_model=TrendOut, responses=error_responses(404))
def prequential_trend(
    modality: Modality, patient_id: str, request: Request, token: Clinician,
    limit: Annotated[int, Query(ge=1, le=10000)] = 200,
) -> TrendOut:
    """Running prequential accuracy (prediction made before the label vs the label in force) after each
    label, oldest first; the last ``limit`` points, each computed over all labels before it."""
    live = _live(request, modality, patient_id)
    points: list[TrendPoint] = []
    correct = 0
    for n, row in enumerate(request.app.state.store.prequential_trend(live.row.id), start=1):
        hit = row["predicted"] == row["label"]
        correct += hit
        points.append(TrendPoint(**row, correct=hit, n=n, accuracy=correct / n))
    return TrendOut(points=points[-limit:])


@router.get("/models/{modality}/{patient_id}/checkpoints", response_model=CheckpointsOut, responses=error_responses(404))
def list_checkpoints(modality: Modality, patient_id: str, request: Request, token: Clinician) -> CheckpointsOut:
    live = _live(request, modality, patient_id)
    rows = request.app.state.registry.checkpoints(live)
    return CheckpointsOut(checkpoints=[CheckpointOut(**{k: row[k] for k in CheckpointOut.model_fields}) for row in rows])


@router.post("/models/{modality}/{patient_id}/rollback", response_model=ModelOut,
             responses={**BODY_ERRORS, **error_responses(404)})
def rollback(modality: Modality, patient_id: str, body: RollbackIn, request: Request, token: Admin) -> ModelOut:
    """Restore the weights of a checkpointed version as a new version; labels are never deleted."""
    live = _live(request, modality, patient_id)
    try:
        request.app.state.registry.rollback(live, body.version, body.replay_later_labels)
    except UnknownCheckpoint as error:
        versions = sorted({row["version"] for row in request.app.state.registry.checkpoints(live)})
        raise _unprocessable(["version"], f"no checkpoint holds version {body.version}; checkpointed versions: {versions}") from error
    return model_summary(request, live)


@router.get(
    "/models/{modality}/{patient_id}/onnx", response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The ONNX graph"}, **error_responses(404)},
)
def export_onnx(modality: Modality, patient_id: str, request: Request, token: Clinician) -> Response:
    """The current model's inference graph, for onnxruntime."""
    live = _live(request, modality, patient_id)
    with live.lock:
        blob = live.learner.to_onnx()
        version = live.learner.version
    filename = f"biofo-{modality}-{patient_id}-v{version}.onnx"
    return Response(
        blob, media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "X-Model-Version": str(version)},
    )


@router.get("/energy", response_model=EnergyOut)
def energy_rows(
    request: Request,
    token: Clinician,
    since: Annotated[float, Query(ge=0)] = 0.0,
    phase: Literal["inference", "update"] | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> EnergyOut:
    rows = request.app.state.store.energy_rows(since, phase, limit)
    return EnergyOut(energy=[EnergyRow(**row) for row in rows])


@router.get("/energy/summary", response_model=EnergySummaryOut)
def energy_summary(request: Request, token: Clinician) -> EnergySummaryOut:
    """Totals per phase and source; figures from different sources are never added together."""
    rows = request.app.state.store.energy_totals()
    return EnergySummaryOut(
        totals=[EnergyTotal(**row, joules_per_item=row["joules"] / row["n"] if row["n"] else None) for row in rows]
    )


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenOut, responses=BODY_ERRORS)
def create_token(body: TokenIn, request: Request, token: Admin) -> TokenOut:
    """Issue a token; it is shown once and stored only as a hash."""
    plaintext = request.app.state.store.create_token(body.name, body.role)
    return TokenOut(token=plaintext, role=body.role, name=body.name)
