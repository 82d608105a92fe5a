"""Request and response bodies of the v1 API. Field names are the public contract."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Modality = Literal["ecg", "eeg"]
PATIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
CHANNEL_NAME = re.compile(r"^[\x20-\x7e]{1,32}$")
# SQLite integers are signed 64-bit: a larger id cannot name a row, and binding it raises OverflowError.
ROW_ID_MAX = 2**63 - 1


class Strict(BaseModel):
    # strict: no coercion, so 0 is not a bool, false is not an int and 3.0 is not an id (an int is
    # still a float).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


def check_patient_id(value: str) -> str:
    # fullmatch: with match, "$" also accepts a trailing newline.
    if not PATIENT_ID.fullmatch(value):
        raise ValueError(
            "patient_id must be 1-64 characters of letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return value


class SegmentMeta(Strict):
    """What a segment says about its samples: every field of ``WindowsIn`` but ``samples``."""

    patient_id: str = Field(
        description="The device's patient identifier",
        json_schema_extra={"pattern": PATIENT_ID.pattern, "minLength": 1, "maxLength": 64},
    )
    modality: Modality
    fs: float = Field(gt=0, le=10_000, description="Sampling rate of `samples`, in Hz")
    channels: list[str] = Field(
        min_length=1, max_length=64,
        json_schema_extra={"items": {"type": "string", "pattern": CHANNEL_NAME.pattern}},
    )
    start: float = Field(ge=0, le=10 * 365 * 86400, description="Seconds since the stream began")
    r_peaks: list[int] | None = Field(default=None, description="ECG R-peak sample indices, optional")
    units: Literal["mV", "uV", "V"] | None = None

    @field_validator("patient_id")
    @classmethod
    def _patient_id(cls, value: str) -> str:
        return check_patient_id(value)

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, channels: list[str]) -> list[str]:
        for name in channels:
            if not CHANNEL_NAME.fullmatch(name):
                raise ValueError("each channel name must be 1-32 printable ASCII characters")
        return channels

    def check_r_peaks(self, n_samples: int) -> None:
        """``r_peaks`` fits a segment of ``n_samples`` samples per channel (ValueError if not)."""
        if self.r_peaks is None:
            return
        if any(peak < 0 or peak >= n_samples for peak in self.r_peaks):
            raise ValueError(f"r_peaks must be sample indices in [0, {n_samples})")
        if any(b <= a for a, b in zip(self.r_peaks, self.r_peaks[1:])):
            raise ValueError("r_peaks must be strictly increasing")
        if self.modality != "ecg":
            raise ValueError("r_peaks is only meaningful for ECG")


class WindowsIn(SegmentMeta):
    # A usable one-second single-lead segment: /docs shows it, and API fuzzers start from it.
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "patient_id": "bed-1", "modality": "ecg", "fs": 100.0, "channels": ["MLII"], "start": 0.0,
        "samples": [[round(0.01 * (i % 25), 2) for i in range(100)]], "units": "mV",
    }]})

    samples: list[list[float]] = Field(min_length=1, description="channels x samples, physical units")

    @model_validator(mode="after")
    def _shape(self) -> WindowsIn:
        if len(self.samples) != len(self.channels):
            raise ValueError(
                f"samples has {len(self.samples)} rows but channels names {len(self.channels)}: one row per channel"
            )
        lengths = {len(row) for row in self.samples}
        if len(lengths) != 1:
            raise ValueError("samples is ragged: every channel row must have the same number of samples")
        if 0 in lengths:
            raise ValueError("samples rows are empty")
        self.check_r_peaks(lengths.pop())
        return self


# The binary body of POST /v1/windows: raw little-endian samples, frame after frame (channel 0,
# 1, ... of sample 0, then of sample 1: WFDB format 16's order, the order an ADC delivers them),
# with the segment's metadata as one JSON object in a header.
BINARY_SEGMENT_TYPE = "application/octet-stream"
SEGMENT_HEADER = "X-Biofo-Segment"
BINARY_DTYPES = {"int16": "<i2", "float32": "<f4"}


class BinarySegmentMeta(SegmentMeta):
    """The ``X-Biofo-Segment`` header of a binary segment: ``WindowsIn`` without ``samples``, and
    how to read them. ``int16`` samples are ADC units, ``(digital − baseline) / gain`` in
    ``units`` per channel, as WFDB headers define ``adc_gain`` and ``baseline``; ``float32``
    samples are already in ``units`` and take neither."""

    dtype: Literal["int16", "float32"] = Field(description="Sample type, little-endian")
    gain: list[Annotated[float, Field(gt=0, le=1e9)]] | None = Field(
        default=None, description="int16: ADC units per physical unit, one per channel")
    baseline: list[Annotated[float, Field(ge=-32768, le=32767)]] | None = Field(
        default=None, description="int16: the ADC value of 0 physical units, one per channel (default 0)")

    @model_validator(mode="after")
    def _scaling(self) -> BinarySegmentMeta:
        if self.dtype == "float32":
            if self.gain is not None or self.baseline is not None:
                raise ValueError("float32 samples are physical values: gain and baseline do not apply")
            return self
        if self.gain is None:
            raise ValueError("int16 samples need gain, one per channel (ADC units per physical unit)")
        for name, values in (("gain", self.gain), ("baseline", self.baseline)):
            if values is not None and len(values) != len(self.channels):
                raise ValueError(f"{name} has {len(values)} values for {len(self.channels)} channels")
        return self


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(description="Where the problem is, e.g. [\"body\", \"samples\"]")
    msg: str = Field(description="The rule broken")
    type: str


class ErrorOut(BaseModel):
    """Every 4xx and 503 body: the field and the rule broken, as a list, or one sentence."""

    detail: list[ErrorItem] | str


class WindowOut(BaseModel):
    id: int
    modality: Modality
    patient_id: str
    offset_s: float
    predicted: str
    probabilities: dict[str, float]
    model_version: int


class DerivedChannelOut(BaseModel):
    """An EEG montage channel the daemon built from two referential channels: `plus` - `minus`."""

    channel: str = Field(description="Canonical double-banana channel, e.g. FP1-F7")
    plus: str = Field(description="Channel name as sent, e.g. 'Fp1.' or 'EEG FP1-REF'")
    minus: str = Field(description="Channel name as sent, e.g. 'F7..' or 'EEG F7-REF'")


class WindowsOut(BaseModel):
    windows: list[WindowOut]
    ignored_channels: list[str] = Field(
        default_factory=list, description="EEG: channels sent that feed no montage channel")
    missing_channels: list[str] = Field(
        default_factory=list,
        description="EEG: montage channels that could not be built from the channels sent "
        "(neither the bipolar pair nor both electrodes on one reference); the model sees zeros")
    derived_channels: list[DerivedChannelOut] = Field(
        default_factory=list,
        description="EEG: montage channels built by subtracting two referential channels")


class LabelIn(Strict):
    window_id: int = Field(ge=1, le=ROW_ID_MAX)
    label: str = Field(min_length=1, max_length=32)
    labeled_by: str = Field(min_length=1, max_length=64)


class LabelsIn(Strict):
    labels: list[LabelIn] = Field(min_length=1, max_length=1000)


class LabelsOut(BaseModel):
    accepted: int
    update_seq: int = Field(description="Sequence number of the last accepted label; "
                            "the model has applied it when applied_seq reaches it")
    label_ids: list[int]


class QueueItem(BaseModel):
    id: int
    patient_id: str
    modality: Modality
    offset_s: float
    predicted: str
    probabilities: dict[str, float]
    margin: float
    model_version: int
    label: str | None
    labeled_by: str | None


class QueueOut(BaseModel):
    windows: list[QueueItem]


class LabelHistory(BaseModel):
    id: int
    label: str
    labeled_by: str
    at: float
    retracted: bool = False


class WindowDetail(QueueItem):
    fs: float
    channels: list[str]
    start: float
    samples: list[list[float]] = Field(description="Empty once retention has dropped them (`samples_pruned_at`)")
    samples_pruned_at: float | None = Field(
        None, description="When retention dropped this unlabelled window's samples; its features and prediction stay")
    sample_channels: list[str] = Field(description="Name of each row of `samples` (the canonical montage for EEG)")
    marker: int | None = Field(description="Index of the R peak in samples (ECG)")
    samples_fs: float
    labels: list[LabelHistory]


class LabelUpdate(BaseModel):
    id: int = Field(description="The update row that learned the label")
    version_before: int
    version_after: int
    duration_s: float
    joules: float
    energy_source: str


class LabelOut(BaseModel):
    id: int
    window_id: int
    modality: Modality
    patient_id: str
    label: str
    labeled_by: str
    at: float
    applied: bool = Field(description="The model has processed this label (learned it, or skipped it as retracted)")
    retracted: bool
    update: LabelUpdate | None = Field(description="The update that learned this label, once applied")


class UndoIn(Strict):
    retracted_by: str | None = Field(
        default=None, min_length=1, max_length=64, description="Who undoes it; defaults to the token's name"
    )


class UndoOut(BaseModel):
    label_id: int
    window_id: int
    retraction_id: int
    version_before: int
    version_after: int
    rebuilt_from_version: int | None = Field(
        description="Checkpointed version the model was rebuilt from; null when the label had not been learned yet"
    )
    replayed: int = Field(description="Labels learned again on top of that checkpoint")
    duration_s: float
    joules: float
    energy_source: str | None
    window_label: str | None = Field(description="The window's label in force now (its previous label, or none)")


class TrendPoint(BaseModel):
    label_id: int
    window_id: int
    at: float
    label: str
    predicted: str
    correct: bool
    n: int
    accuracy: float


class TrendOut(BaseModel):
    points: list[TrendPoint] = Field(description="Running prequential accuracy after each label in force, oldest first")


class Prequential(BaseModel):
    accuracy: float | None
    n: int
    per_class: dict[str, dict[str, int]]


class ModelOut(BaseModel):
    modality: Modality
    patient_id: str
    version: int
    rule: str
    base: str
    updates_applied: int
    labels_pending: int
    applied_seq: int
    prequential: Prequential


class ModelsOut(BaseModel):
    models: list[ModelOut]


class CheckpointOut(BaseModel):
    id: int
    version: int
    applied_seq: int = Field(description="The model had applied every label up to this sequence number")
    kind: Literal["fork", "periodic", "shutdown", "rollback", "undo"]
    reason: str
    sha256: str
    at: float


class CheckpointsOut(BaseModel):
    checkpoints: list[CheckpointOut]


class RollbackIn(Strict):
    version: int = Field(ge=0, le=ROW_ID_MAX)
    replay_later_labels: bool = Field(
        default=False,
        description="Re-apply the labels accepted after that version on top of it (true), "
        "or keep them stored but not learned (false)",
    )


class EnergyRow(BaseModel):
    id: int
    at: float
    phase: Literal["inference", "update"]
    modality: str | None
    patient_id: str | None
    n: int
    duration_s: float
    joules: float
    source: str
    rail: str
    total: str


class EnergyOut(BaseModel):
    energy: list[EnergyRow]


class EnergyTotal(BaseModel):
    phase: str
    source: str
    rail: str
    n: int
    rows: int
    joules: float
    duration_s: float
    joules_per_item: float | None


class EnergySummaryOut(BaseModel):
    totals: list[EnergyTotal]


class TokenIn(Strict):
    role: Literal["device", "clinician", "admin"]
    name: str = Field(min_length=1, max_length=64)


class TokenOut(BaseModel):
    token: str
    role: str
    name: str


class GroupUndoIn(Strict):
    label_ids: list[Annotated[int, Field(ge=1, le=ROW_ID_MAX)]] = Field(
        min_length=1, max_length=5000, description="Labels of one patient given in one action"
    )
    retracted_by: str | None = Field(
        default=None, min_length=1, max_length=64, description="Who undoes them; defaults to the token's name"
    )


class GroupUndoOut(BaseModel):
    label_ids: list[int]
    retraction_ids: list[int]
    version_before: int
    version_after: int
    rebuilt_from_version: int | None = Field(description="Checkpointed version the model was rebuilt from; null when none of the labels had been learned")
    replayed: int
    duration_s: float
    joules: float
    energy_source: str | None


class TemplateOut(BaseModel):
    index: int = Field(description="Template number, in order of creation")
    rr_group: Literal["regular", "premature"]
    members: int = Field(description="Beats in the template")
    unlabelled: int = Field(description="Members without a label in force")
    predicted: str = Field(description="The class the model predicted most often for the unlabelled members")
    predicted_counts: dict[str, int] = Field(description="Predictions (made on arrival) of the unlabelled members")
    label_counts: dict[str, int] = Field(description="Labels in force among the members")


class TemplatesOut(BaseModel):
    patient_id: str
    threshold: float = Field(description="Correlation a beat needs to join a template")
    method: str
    templates: list[TemplateOut]


class TemplateDetail(TemplateOut):
    window_ids: list[int] = Field(description="Unlabelled members, in arrival order: what one key labels")
    samples_fs: float
    pre_s: float = Field(description="Overlay traces start this long before R")
    overlay_ids: list[int] = Field(description="The members drawn in the overlay (at most 40, spread over the template)")
    overlay: list[list[list[float | None]]] = Field(
        description="Per overlay member: leads x samples around R, mV; null where the beat has no sample "
        "(a beat at the very start of the stream)")
    mean: list[list[float | None]] = Field(
        description="Mean of the overlay traces, leads x samples; null where no member has a sample")
    sample_channels: list[str]


class StripBeat(BaseModel):
    id: int
    offset_s: float
    predicted: str
    label: str | None


class StripOut(BaseModel):
    patient_id: str
    start: float
    duration: float
    fs: float
    channels: list[str]
    samples: list[list[float | None]] = Field(description="leads x samples from `start`; null where no beat context covers the time")
    beats: list[StripBeat]
    beats_without_samples: int = Field(
        0, description="Beats in the strip whose samples retention dropped (unlabelled and old): gaps in `samples`")
    stream_start: float = Field(description="Offset of the stream's first beat (for paging)")
    stream_end: float = Field(description="Offset of the stream's last beat")


class EegPageOut(BaseModel):
    patient_id: str
    start: float
    duration: float
    fs: float
    window_s: float = Field(description="Length of one window; the page's windows tile it")
    channels: list[str]
    samples: list[list[float | None]] = Field(
        description="channels x samples from `start`, uV; null where no stored window covers the time")
    windows: list[StripBeat] = Field(description="The windows that start on the page, in time order")
    stream_start: float = Field(description="Offset of the stream's first window (for paging)")
    stream_end: float = Field(description="Offset of the stream's last window")


class IntervalIn(Strict):
    """A seizure marked on a page: its onset and offset, in seconds since the stream began."""

    start: float = Field(ge=0, le=10 * 365 * 86400, description="The page's first second")
    duration: float = Field(default=10.0, gt=0, le=60, description="The page's length in seconds")
    onset: float = Field(ge=0, le=10 * 365 * 86400)
    offset: float = Field(ge=0, le=10 * 365 * 86400)
    labeled_by: str = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _inside(self) -> IntervalIn:
        if not self.onset < self.offset:
            raise ValueError("onset must come before offset")
        if self.onset < self.start or self.offset > self.start + self.duration:
            raise ValueError("the interval must lie on the page: start <= onset < offset <= start + duration")
        return self


class IntervalWindow(BaseModel):
    window_id: int
    offset_s: float
    label: str
    label_id: int


class IntervalOut(LabelsOut):
    windows: list[IntervalWindow] = Field(
        description="Every whole window of the page with the label it got, in time order; a window is "
        "seizure when at least half of it lies in the interval (the rule the training data is labelled by)")


class AlarmDelivery(BaseModel):
    url: str
    attempts: int
    delivered_at: float | None
    last_status: int | None
    last_error: str | None


class AlarmOut(BaseModel):
    id: int
    patient_id: str
    modality: Modality
    kind: Literal["ventricular_run", "seizure"]
    first_window_id: int
    last_window_id: int
    n_windows: int = Field(description="Consecutive alarming beats (ECG) or windows (EEG) in the run")
    start_s: float
    end_s: float
    raised_at: float
    acknowledged_by: str | None
    acknowledged_at: float | None
    deliveries: list[AlarmDelivery]


class AlarmsOut(BaseModel):
    alarms: list[AlarmOut]


class AcknowledgeIn(Strict):
    acknowledged_by: str | None = Field(
        default=None, min_length=1, max_length=64, description="Who acknowledges; defaults to the token's name"
    )
