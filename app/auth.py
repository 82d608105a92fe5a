"""Bearer tokens with roles: ``device`` posts windows, ``clinician`` labels and reads, ``admin`` does
everything. Tokens are stored as SHA-256 hashes; the page carries the same token in an HTTP-only
cookie.

A browser attaches that cookie to requests other sites make it send, so a write authenticated by the
cookie alone must also prove it comes from this daemon's own page (CSRF). The cookie is SameSite=Strict,
and on top of that such a write needs an ``Origin`` (or, failing that, ``Referer``) equal to the
daemon's own origin. Bearer-header clients (devices, scripts) are not exposed to CSRF and are not
checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.deps import StoreDep
from app.store import Token

SESSION_COOKIE = "biofo_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Declares the scheme in the OpenAPI document (clients and fuzzers learn that every /v1 route needs
# it); the check itself is ``requires``, which also accepts the page's cookie.
BEARER = HTTPBearer(auto_error=False, description="A device, clinician or admin token")


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def same_origin(request: Request) -> bool:
    """Whether the request's ``Origin`` (else its ``Referer``'s origin) is the origin it was sent to.

    A request carrying neither, or ``Origin: null``, fails. Browsers send ``Origin`` with the page's
    POSTs; for form posts only because the page's ``Referrer-Policy`` is ``same-origin``.
    """
    claimed = request.headers.get("origin")
    if claimed is None:
        referer = urlsplit(request.headers.get("referer", ""))
        if not referer.scheme or not referer.netloc:
            return False
        claimed = f"{referer.scheme}://{referer.netloc}"
    host = request.headers.get("host")
    return bool(host) and claimed.lower() == f"{request.url.scheme}://{host}".lower()


def token_from_request(request: Request) -> str | None:
    """The bearer token, else the session cookie; a cookie-borne write from another origin is refused."""
    token = bearer_token(request)
    if token is not None:
        return token
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and request.method not in SAFE_METHODS and not same_origin(request):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="cross-origin write refused: a request authenticated by the session cookie must come "
            "from this daemon's page (Origin or Referer must match)",
        )
    return cookie


def requires(*roles: str) -> Callable[[Request], Token]:
    """A dependency that admits the given roles, and admin always."""
    allowed = set(roles) | {"admin"}

    def dependency(
        request: Request, store: StoreDep, _: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
    ) -> Token:
        presented = token_from_request(request)
        if not presented:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing credentials: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        token = store.find_token(presented)
        if token is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, detail="unknown or revoked token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if token.role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role '{token.role}' may not do this; needs one of {sorted(allowed)}",
            )
        return token

    return dependency
