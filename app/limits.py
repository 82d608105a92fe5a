"""Limits every request meets before a route runs: the size of its body and, on the API, its media type.

A pure ASGI middleware: the size is checked on the declared ``Content-Length`` and again on the bytes
as they arrive, so a chunked body without a length is refused once it passes the limit instead of
being buffered whole.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.schemas import BINARY_SEGMENT_TYPE

API_PREFIX = "/v1/"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON = "application/json"
# Routes that also take a binary body (``app.segment_body``), by path.
BINARY_ROUTES = {"/v1/windows": BINARY_SEGMENT_TYPE}


def too_large(max_bytes: int) -> list[dict[str, object]]:
    return [{"loc": ["body"], "msg": f"request body is larger than {max_bytes} bytes (BIOFO_MAX_BODY_BYTES)",
             "type": "too_large"}]


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit. An HTTPException, because FastAPI's
    body reader re-raises those (any other error becomes a 400) and its handler answers with the detail."""

    def __init__(self, max_bytes: int):
        super().__init__(413, detail=too_large(max_bytes))


class RequestLimits:
    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await JSONResponse({"detail": too_large(self.max_body_bytes)}, 413)(scope, receive, send)
            return
        has_body = (length is not None and int(length) > 0) or "transfer-encoding" in headers
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        accepted = (JSON, BINARY_ROUTES[scope["path"]]) if scope["path"] in BINARY_ROUTES else (JSON,)
        if (has_body and scope["method"] in BODY_METHODS and scope["path"].startswith(API_PREFIX)
                and media_type not in accepted):
            detail = [{"loc": ["header", "content-type"], "type": "unsupported_media_type",
                       "msg": f"the body must be {' or '.join(accepted)}, not '{media_type or 'unspecified'}'"}]
            await JSONResponse({"detail": detail}, 415)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        await self.app(scope, counted, send)
