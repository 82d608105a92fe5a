"""A segment's request body, JSON or binary, read into its metadata and its samples.

``POST /v1/windows`` takes ``application/json`` (``WindowsIn``) or ``application/octet-stream``:
the samples as raw little-endian int16 or float32, frame after frame (WFDB format 16's order),
and every other field as one JSON object in the ``X-Biofo-Segment`` header
(``BinarySegmentMeta``). Why this format: a device's firmware already holds its ADC samples as
int16 in that order, so a vendor writes the header with ``snprintf`` and sends the buffer as it
is, with no JSON number formatting (~7 200 numbers per 10 s ECG segment) and nothing to parse
on either side but one small object. int16 with a per-channel gain and baseline is what WFDB and
EDF store; float32 serves devices that only have physical values.

Both bodies meet the same checks and give the same ``(metadata, samples)``, so the ingest path,
its limits, its answers and its duplicate detection cannot tell them apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.schemas import (
    BINARY_DTYPES,
    BINARY_SEGMENT_TYPE,
    SEGMENT_HEADER,
    BinarySegmentMeta,
    SegmentMeta,
    WindowsIn,
)


@dataclass(frozen=True)
class SegmentBody:
    meta: SegmentMeta
    samples: np.ndarray  # (channels, n) float64, in ``meta.units``


def _invalid(prefix: tuple[str | int, ...], error: ValidationError) -> RequestValidationError:
    return RequestValidationError(
        [
            {"loc": (*prefix, *item["loc"]), "msg": item["msg"], "type": item["type"]}
            for item in error.errors(include_url=False)
        ]
    )


def _unprocessable(loc: tuple[str, ...], message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])


def parse_json(raw: bytes) -> SegmentBody:
    """A JSON body, answered as FastAPI answers a body it validates itself: undecodable bytes
    400, malformed JSON and invalid fields 422 naming the field."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as error:
        raise RequestValidationError(
            [{"loc": ("body", error.pos), "msg": "JSON decode error", "type": "json_invalid"}]
        ) from error
    except ValueError as error:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "There was an error parsing the body"
        ) from error
    try:
        body = WindowsIn.model_validate(data)
    except ValidationError as error:
        raise _invalid(("body",), error) from error
    return SegmentBody(body, np.asarray(body.samples, dtype=np.float64))


def parse_binary(header: str | None, raw: bytes) -> SegmentBody:
    """A binary body and its ``X-Biofo-Segment`` header, as strict as the JSON body."""
    where = ("header", SEGMENT_HEADER.lower())
    if header is None:
        raise _unprocessable(
            where,
            f"a {BINARY_SEGMENT_TYPE} segment needs its metadata as JSON "
            f"in the {SEGMENT_HEADER} header",
        )
    try:
        meta = BinarySegmentMeta.model_validate_json(header)
    except ValidationError as error:
        raise _invalid(where, error) from error
    dtype = np.dtype(BINARY_DTYPES[meta.dtype])
    frame = dtype.itemsize * len(meta.channels)
    if not raw or len(raw) % frame:
        raise _unprocessable(
            ("body",),
            (
                f"the body holds {len(raw)} bytes, not a whole, non-zero number of frames of "
                f"{len(meta.channels)} channels x {dtype.itemsize} bytes ({meta.dtype})"
            ),
        )
    samples = np.frombuffer(raw, dtype=dtype).reshape(-1, len(meta.channels)).T.astype(np.float64)
    if meta.dtype == "int16":
        baseline = (
            np.zeros(len(meta.channels)) if meta.baseline is None else np.array(meta.baseline)
        )
        samples = (samples - baseline[:, None]) / np.array(meta.gain)[:, None]
    try:
        meta.check_r_peaks(samples.shape[1])
    except ValueError as error:
        raise _unprocessable((*where, "r_peaks"), str(error)) from error
    return SegmentBody(meta, samples)


async def segment_body(request: Request) -> SegmentBody:
    """The dependency of ``POST /v1/windows`` (the media type was checked by ``app.limits``)."""
    raw = await request.body()
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == BINARY_SEGMENT_TYPE:
        return parse_binary(request.headers.get(SEGMENT_HEADER), raw)
    return parse_json(raw)


def add_schemas(openapi: dict[str, Any]) -> None:
    """Put the two bodies' models into an OpenAPI document's components, where the route's
    ``requestBody`` (``openapi_request_body``) refers to them."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in (WindowsIn, BinarySegmentMeta):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema


def openapi_request_body() -> dict[str, Any]:
    """The route's ``requestBody`` and its metadata header, for ``openapi_extra``."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/WindowsIn"}},
                BINARY_SEGMENT_TYPE: {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": (
                            "Samples as little-endian int16 or float32, frame after frame (channel 0, 1, ... of "
                            "sample 0, then sample 1: WFDB format 16's order); everything else in the "
                            f"{SEGMENT_HEADER} header"
                        ),
                    },
                    "encoding": {},
                },
            },
        },
        "parameters": [
            {
                "name": SEGMENT_HEADER,
                "in": "header",
                "required": False,
                "description": (
                    "With an application/octet-stream body (required then): the segment's "
                    "metadata as one JSON object, a BinarySegmentMeta"
                ),
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/BinarySegmentMeta"}
                    }
                },
            }
        ],
    }
