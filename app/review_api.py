"""The v1 routes of the clinician's review workflow: beat templates, rhythm strips, EEG pages and
seizure intervals, alarms, live events, and undoing a whole action (a template, an interval). Authentication and roles as the other /v1 routes."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import StreamingResponse

from app.alarms import alarm_payload
from app.api import (
    BODY_ERRORS,
    Clinician,
    RowId,
    _live,
    _unprocessable,
    accept_labels,
    error_responses,
)
from app.deps import EventsDep, MetricsDep, RegistryDep, StoreDep, TemplatesDep, WorkerDep
from app.modalities import MODALITIES
from app.registry import AlreadyRetracted, LiveModel, PredatesRollback
from app.schemas import (
    PATIENT_ID,
    AcknowledgeIn,
    AlarmDelivery,
    AlarmOut,
    AlarmsOut,
    EegPageOut,
    GroupUndoIn,
    GroupUndoOut,
    IntervalIn,
    IntervalOut,
    IntervalWindow,
    LabelIn,
    Modality,
    StripBeat,
    StripOut,
    TemplateDetail,
    TemplateOut,
    TemplatesOut,
)
from app.store import LabelRow, Store, stored_samples
from app.templates import TemplateBooks
from signals.ecg_features import CONTEXT_AFTER_S, CONTEXT_BEFORE_S, DEFAULT_WINDOW, ECG_FS
from signals.eeg_features import (
    EEG_CLASSES,
    EEG_FS,
    EEG_WINDOW_S,
    window_class,
    window_ictal_fraction,
)
from signals.stitch import stitch
from signals.templates import THRESHOLD

router = APIRouter(prefix="/v1", responses=error_responses(401, 403, 503))
PatientId = Annotated[str, Path(pattern=PATIENT_ID.pattern)]
StreamSecond = Annotated[float, Query(ge=0, le=10 * 365 * 86400, description="Seconds since the stream began")]
SpanSeconds = Annotated[float, Query(gt=0, le=60)]
OVERLAY_MAX = 40
SEIZURE = "seizure"
METHOD = (
    "online leader clustering in arrival order: a beat joins the template (same RR group: premature if the "
    "previous RR < 0.85 x local mean) whose mean QRS waveform (both leads, R - 100 ms to R + 150 ms at 360 Hz, "
    "0.5-40 Hz) correlates best with it, if r >= threshold"
)


# Templates ---------------------------------------------------------------------------------------


def _ecg(registry: RegistryDep, patient_id: PatientId) -> LiveModel:
    """The patient's ECG model named by the path, or 404."""
    return _live(registry, "ecg", patient_id)


# As in app.api: the token resolves before the model, so a refused caller learns nothing of patients.
EcgLive = Annotated[LiveModel, Depends(_ecg)]


def _summaries(store: Store, books: TemplateBooks, live: LiveModel) -> list[tuple[TemplateOut, list[int]]]:
    """Every template with its summary and its unlabelled members (arrival order)."""
    book = books.current(live.row.id)
    with book.lock:
        groups = [(t.index, t.rr_group, list(t.members)) for t in book.clusterer.templates]
        through = book.seen_through
    states = store.window_states(live.row.id, through)
    out = []
    for index, group, assigned in groups:
        members = [w for w in assigned if w in states]  # retention may have deleted old unlabelled beats
        open_ids = [w for w in members if states[w]["label"] is None]
        predicted = Counter(states[w]["predicted"] for w in open_ids)
        labels = Counter(states[w]["label"] for w in members if states[w]["label"] is not None)
        summary = TemplateOut(
            index=index, rr_group=group, members=len(members), unlabelled=len(open_ids),
            predicted=predicted.most_common(1)[0][0] if predicted else (labels.most_common(1)[0][0] if labels else ""),
            predicted_counts=dict(predicted), label_counts=dict(labels),
        )
        out.append((summary, open_ids))
    return out


@router.get("/templates/ecg/{patient_id}", response_model=TemplatesOut, responses=error_responses(404))
def list_templates(
    token: Clinician, live: EcgLive, store: StoreDep, books: TemplatesDep, labeled: bool = False,
) -> TemplatesOut:
    """The patient's beat templates, most unlabelled beats first: with ``labeled=false`` (default) those
    that still hold unlabelled beats, with ``true`` those fully labelled."""
    rows = [s for s, _ in _summaries(store, books, live) if (s.unlabelled == 0) == labeled]
    rows.sort(key=lambda s: (-s.unlabelled, -s.members, s.index))
    return TemplatesOut(patient_id=live.row.patient_id, threshold=THRESHOLD, method=METHOD, templates=rows)


@router.get("/templates/ecg/{patient_id}/{index}", response_model=TemplateDetail, responses=error_responses(404))
def get_template(
    token: Clinician, live: EcgLive, index: Annotated[int, Path(ge=0, le=1_000_000)], store: StoreDep,
    books: TemplatesDep,
) -> TemplateDetail:
    """One template: its unlabelled members and an overlay of up to 40 of them around R."""
    found = next(((s, ids) for s, ids in _summaries(store, books, live) if s.index == index), None)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"patient '{live.row.patient_id}' has no template {index}")
    summary, open_ids = found
    book = books.current(live.row.id)
    with book.lock:
        members = list(book.clusterer.templates[index].members)
    # The overlay draws members whose samples are kept (retention drops those of old unlabelled beats):
    # the unlabelled ones, else any.
    drawable = store.windows_with_samples(members)
    shown = [w for w in open_ids if w in drawable] or [w for w in members if w in drawable]
    picks = [shown[int(i)] for i in np.unique(np.linspace(0, len(shown) - 1, min(OVERLAY_MAX, len(shown))).astype(int))]
    pre, post = DEFAULT_WINDOW.pre, DEFAULT_WINDOW.post
    traces, channels = [], ["lead 1", "lead 2"]
    for window_id in picks:
        row = store.window(window_id)
        samples = stored_samples(row)
        r = int(row["marker"])
        piece = stitch([(-r / ECG_FS, samples)], ECG_FS, -pre / ECG_FS, (pre + post) / ECG_FS, samples.shape[0])
        traces.append(piece)
        names = json.loads(row["channels"])
        if len(names) == samples.shape[0]:
            channels = names
    stacked = np.stack(traces) if traces else np.full((1, 2, pre + post), np.nan)  # nothing drawable: all gaps
    present = np.sum(~np.isnan(stacked), axis=0)
    # A sample no member has (beats at the very start of the stream) stays a gap in the mean too.
    mean = np.divide(np.nansum(stacked, axis=0), present, out=np.full(present.shape, np.nan), where=present > 0)
    return TemplateDetail(
        **summary.model_dump(), window_ids=open_ids, samples_fs=ECG_FS, pre_s=pre / ECG_FS, overlay_ids=picks,
        overlay=[_rounded(t) for t in traces], mean=_rounded(mean), sample_channels=channels,
    )


def _rounded(samples: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else round(float(v), 4) for v in row] for row in samples]


# Undo of one template action ---------------------------------------------------------------------


@router.post("/retractions", response_model=GroupUndoOut, responses={**BODY_ERRORS, **error_responses(404, 409)})
def undo_labels(
    body: GroupUndoIn, token: Clinician, store: StoreDep, registry: RegistryDep, metrics: MetricsDep,
    events: EventsDep,
) -> GroupUndoOut:
    """Retract the labels of one action (a whole template) together: one rebuild, one new version."""
    labels = []
    for position, label_id in enumerate(body.label_ids):
        row = store.label(label_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=[
                {"loc": ["body", "label_ids", position], "msg": f"no label with id {label_id}", "type": "not_found"}])
        labels.append(LabelRow(**{key: row[key] for key in ("id", "window_id", "model_id", "label", "labeled_by", "at")}))
    if len({label.model_id for label in labels}) != 1 or len({label.id for label in labels}) != len(labels):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail=[
            {"loc": ["body", "label_ids"], "msg": "label_ids must be distinct labels of one patient's model",
             "type": "value_error"}])
    labels.sort(key=lambda label: label.id)
    by = body.retracted_by or token.name
    try:
        done = registry.retract_group(labels, token.id, by)
    except (AlreadyRetracted, PredatesRollback) as error:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(error)) from error
    first = done[0]
    live = registry.by_id(labels[0].model_id)
    metrics.model_version.labels(live.row.modality, live.row.patient_id).set(first.version_after)
    events.publish("model", {
        "modality": live.row.modality, "patient_id": live.row.patient_id, "version": first.version_after})
    return GroupUndoOut(
        label_ids=[label.id for label in labels], retraction_ids=[r.id for r in done],
        version_before=first.version_before, version_after=first.version_after,
        rebuilt_from_version=first.rebuilt_from_version, replayed=first.replayed, duration_s=first.duration_s,
        joules=first.joules, energy_source=first.energy_source,
    )


# Rhythm strip -------------------------------------------------------------------------------------


def _stitched(
    store: Store, live: LiveModel, start: float, duration: float, before_s: float, after_s: float,
) -> tuple[np.ndarray, list[str], list[dict], dict, int]:
    """The stream from ``start`` for ``duration`` s rebuilt from the stored windows whose offset lies
    within ``before_s`` before to ``after_s`` after it (how far one window's samples reach), the
    channel names, the windows that start in the span, the stream's span, and how many of those
    windows retention left without samples (their stretch is a gap)."""
    modality = MODALITIES[live.row.modality]
    rows = store.windows_between(live.row.id, start - before_s, start + duration + after_s)
    pieces, channels = [], modality.plot_channels([], 2)
    without_samples = 0
    for row in rows:
        samples = stored_samples(row)
        if samples is None:
            without_samples += start <= row["offset_s"] < start + duration
            continue
        # An ECG beat's samples begin ``marker`` samples before its R peak; an EEG window's at its offset.
        pieces.append((row["offset_s"] - (row["marker"] or 0) / modality.plot_fs, samples))
        channels = modality.plot_channels(json.loads(row["channels"]), samples.shape[0])
    signal = stitch(pieces, modality.plot_fs, start, duration, len(channels))
    shown = [r for r in rows if start <= r["offset_s"] < start + duration]
    return signal, channels, shown, store.stream_span(live.row.id), without_samples


@router.get("/strips/ecg/{patient_id}", response_model=StripOut, responses=error_responses(404))
def rhythm_strip(
    token: Clinician, live: EcgLive, store: StoreDep,
    start: StreamSecond = 0.0,
    duration: SpanSeconds = 10.0,
) -> StripOut:
    """Both leads from ``start`` for ``duration`` seconds, rebuilt from the stored beats, with every beat's
    predicted class and label in force."""
    signal, channels, rows, span, without_samples = _stitched(
        store, live, start, duration, CONTEXT_AFTER_S, CONTEXT_BEFORE_S)
    return StripOut(
        patient_id=live.row.patient_id, start=start, duration=duration, fs=ECG_FS, channels=channels,
        samples=_rounded(signal), beats=_marks(rows), beats_without_samples=without_samples,
        stream_start=span["lo"] or 0.0, stream_end=span["hi"] or 0.0,
    )


def _marks(rows: list[dict]) -> list[StripBeat]:
    return [StripBeat(id=r["id"], offset_s=r["offset_s"], predicted=r["predicted"], label=r["label"]) for r in rows]


# EEG pages and seizure intervals ------------------------------------------------------------------


def _eeg(registry: RegistryDep, patient_id: PatientId) -> LiveModel:
    """The patient's EEG model named by the path, or 404."""
    return _live(registry, "eeg", patient_id)


EegLive = Annotated[LiveModel, Depends(_eeg)]


@router.get("/strips/eeg/{patient_id}", response_model=EegPageOut, responses=error_responses(404))
def eeg_page(
    token: Clinician, live: EegLive, store: StoreDep,
    start: StreamSecond = 0.0,
    duration: SpanSeconds = 10.0,
) -> EegPageOut:
    """A page of EEG: every channel of the montage from ``start`` for ``duration`` seconds, rebuilt from
    the stored windows, with each window's prediction and label in force."""
    signal, channels, rows, span, _ = _stitched(store, live, start, duration, EEG_WINDOW_S, 0.0)
    return EegPageOut(
        patient_id=live.row.patient_id, start=start, duration=duration, fs=EEG_FS, window_s=EEG_WINDOW_S,
        channels=channels, samples=_rounded(signal), windows=_marks(rows),
        stream_start=span["lo"] or 0.0, stream_end=span["hi"] or 0.0,
    )


@router.post("/intervals/eeg/{patient_id}", status_code=status.HTTP_202_ACCEPTED, response_model=IntervalOut,
             responses={**BODY_ERRORS, **error_responses(404)})
def label_interval(
    body: IntervalIn, token: Clinician, live: EegLive, store: StoreDep, registry: RegistryDep,
    metrics: MetricsDep, worker: WorkerDep,
) -> IntervalOut:
    """Label a page by a seizure interval, in one action: each whole window of the page becomes
    ``seizure`` when at least half of it lies between onset and offset, and ``background`` otherwise.
    The labels are stored in time order, so the model learns them in that order, one update each;
    ``POST /v1/retractions`` with the answer's ``label_ids`` undoes the interval as a whole."""
    end = body.start + body.duration
    # A window belongs to the page when all of it does (1 ms of slack for offsets stored as floats).
    rows = store.windows_between(live.row.id, body.start - 1e-3, end - EEG_WINDOW_S + 1e-3, with_samples=False)
    if not rows:
        raise _unprocessable(["start"], f"no whole {EEG_WINDOW_S:g} s window of patient "
                             f"'{live.row.patient_id}' lies on the page {body.start:g}-{end:g} s")
    names = [EEG_CLASSES[window_class(window_ictal_fraction([(body.onset, body.offset)], r["offset_s"], EEG_WINDOW_S))]
             for r in rows]
    if SEIZURE not in names:
        raise _unprocessable(["offset"], f"the interval {body.onset:g}-{body.offset:g} s covers no window by half "
                             f"or more ({EEG_WINDOW_S / 2:g} s); nothing would be labelled seizure")
    items = [LabelIn(window_id=r["id"], label=name, labeled_by=body.labeled_by) for r, name in zip(rows, names)]
    out = accept_labels(items, token, store, registry, metrics, worker)
    return IntervalOut(
        **out.model_dump(),
        windows=[IntervalWindow(window_id=r["id"], offset_s=r["offset_s"], label=name, label_id=label_id)
                 for r, name, label_id in zip(rows, names, out.label_ids)],
    )


# Alarms -------------------------------------------------------------------------------------------


def alarm_out(store: Store, row: dict) -> AlarmOut:
    deliveries = store.alarm_deliveries(row["id"])
    return AlarmOut(**alarm_payload(row), deliveries=[AlarmDelivery(**d) for d in deliveries])


@router.get("/alarms", response_model=AlarmsOut)
def list_alarms(
    token: Clinician, store: StoreDep,
    patient_id: Annotated[str | None, Query(pattern=PATIENT_ID.pattern)] = None,
    modality: Modality | None = None,
    acknowledged: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> AlarmsOut:
    """Alarms, newest first: ventricular runs (ECG) and seizure detections (EEG), with their
    acknowledgement and webhook deliveries."""
    rows = store.alarms(patient_id, modality, acknowledged, limit, offset)
    return AlarmsOut(alarms=[alarm_out(store, row) for row in rows])


@router.post("/alarms/{alarm_id}/acknowledge", response_model=AlarmOut,
             responses={**BODY_ERRORS, **error_responses(404, 409)})
def acknowledge_alarm(
    alarm_id: RowId, token: Clinician, store: StoreDep, events: EventsDep, body: AcknowledgeIn | None = None,
) -> AlarmOut:
    """Acknowledge an alarm; who and when are kept. Acknowledging twice is a 409 naming the first."""
    row = store.alarm(alarm_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no alarm with id {alarm_id}")
    by = body.acknowledged_by if body is not None and body.acknowledged_by else token.name
    if not store.acknowledge_alarm(alarm_id, by, token.id):
        first = store.alarm(alarm_id)
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"alarm {alarm_id} was acknowledged by {first['acknowledged_by']} at {first['acknowledged_at']}")
    row = store.alarm(alarm_id)
    events.publish("alarm", alarm_payload(row))
    return alarm_out(store, row)


# Live events --------------------------------------------------------------------------------------


@router.get("/events", include_in_schema=False)
async def event_stream(
    request: Request, token: Clinician, hub: EventsDep,
    patient_id: Annotated[str | None, Query(pattern=PATIENT_ID.pattern)] = None,
    modality: Modality | None = None,
) -> StreamingResponse:
    """Server-sent events for an open page: ``windows`` (new windows with predictions), ``model`` (a new
    model version), ``alarm`` (raised, extended or acknowledged). Not in the OpenAPI document: it is a
    stream that does not end, which API fuzzers cannot exercise."""
    subscription = hub.subscribe(modality, patient_id)
    return StreamingResponse(
        hub.stream(subscription, request.is_disconnected), media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
