"""The clinician page: sign-in with a clinician token, the patient list, the labelling queue, the
timeline, and the review views (ECG templates and rhythm strip, EEG pages). Pages are server-rendered shells; their scripts (static files, no inline code: the CSP
forbids it) read and write through the /v1 API, authenticated by the session cookie."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.api import model_summary
from app.auth import SESSION_COOKIE, same_origin
from app.deps import RegistryDep, StoreDep
from app.registry import LiveModel
from app.schemas import Modality
from app.store import Token

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
# Served through a route of this router rather than a mount, so including the router is all it takes.
static_files = StaticFiles(directory=HERE / "static")

router = APIRouter(include_in_schema=False)

PAGE_ROLES = ("clinician", "admin")
SESSION_SECONDS = 12 * 3600  # one clinical shift
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# Pages hold patient data: never cached. Under the daemon's default "no-referrer" a browser sends
# "Origin: null" with a form post (sign-in, sign-out), which the CSRF check must refuse;
# "same-origin" lets it send the real origin to this daemon and still tells other sites nothing.
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "same-origin"}
CLASS_TITLES = {
    "N": "Normal",
    "S": "SVEB",
    "V": "VEB",
    "F": "Fusion",
    "Q": "Paced / unknown",
    "seizure": "Seizure",
    "background": "Background",
}


def cookie_secure(request: Request) -> bool:
    """Whether the session cookie gets the ``Secure`` flag.

    Browsers keep a Secure cookie only over https, and over plain http to loopback (localhost is a
    secure context), so the flag is set there. A bedside daemon reached over plain http at a LAN
    address would have a Secure cookie silently dropped and sign-in would loop, so there the flag is
    left off; HTTP-only and SameSite=Strict still apply, and a deployment off loopback belongs behind
    TLS, where the flag is set again.
    """
    return request.url.scheme == "https" or request.url.hostname in LOOPBACK_HOSTS


def signed_in(request: Request, store: StoreDep) -> Token | None:
    """The clinician (or admin) whose session cookie came with the request, if any."""
    presented = request.cookies.get(SESSION_COOKIE)
    token = store.find_token(presented) if presented else None
    return token if token is not None and token.role in PAGE_ROLES else None


User = Annotated[Token | None, Depends(signed_in)]


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    return templates.TemplateResponse(request, name, context, status_code=status_code, headers=PAGE_HEADERS)


def to_login() -> RedirectResponse:
    return RedirectResponse("/login", status.HTTP_303_SEE_OTHER, headers=PAGE_HEADERS)


def class_keys(classes: tuple[str, ...]) -> list[dict[str, str]]:
    """Each class with its hotkey (its first letter: N S V F Q for ECG, S B for EEG)."""
    keys = [name[0].lower() for name in classes]
    if len(set(keys)) != len(keys):
        keys = [str(index + 1) for index in range(len(classes))]
    return [{"name": name, "key": key, "title": CLASS_TITLES.get(name, name)} for name, key in zip(classes, keys)]


@router.get("/static/{path:path}")
async def static(path: str, request: Request) -> Response:
    return await static_files.get_response(path, request.scope)


@router.get("/login")
def login_form(request: Request, user: User) -> Response:
    if user is not None:
        return RedirectResponse("/", status.HTTP_303_SEE_OTHER, headers=PAGE_HEADERS)
    return render(request, "login.html", {"error": None})


@router.post("/login")
def login(request: Request, store: StoreDep, token: Annotated[str, Form(max_length=512)] = "") -> Response:
    if not same_origin(request):
        return render(request, "login.html", {"error": "Sign-in must come from this page."}, 403)
    presented = token.strip()
    found = store.find_token(presented) if presented else None
    if found is None:
        return render(request, "login.html", {"error": "Unknown or revoked token."}, 401)
    if found.role not in PAGE_ROLES:
        return render(request, "login.html", {"error": f"A {found.role} token cannot sign in; use a clinician token."}, 403)
    response = RedirectResponse("/", status.HTTP_303_SEE_OTHER, headers=PAGE_HEADERS)
    response.set_cookie(
        SESSION_COOKIE, presented, max_age=SESSION_SECONDS, path="/", httponly=True, samesite="strict",
        secure=cookie_secure(request),
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    if not same_origin(request):
        return Response("cross-origin sign-out refused", status.HTTP_403_FORBIDDEN, headers=PAGE_HEADERS)
    response = to_login()
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=cookie_secure(request))
    return response


@router.get("/")
def patients(request: Request, user: User, store: StoreDep, registry: RegistryDep) -> Response:
    if user is None:
        return to_login()
    counts = store.window_counts()
    models = sorted(registry.all(), key=lambda live: (live.row.patient_id, live.row.modality))
    rows = [
        {"model": model_summary(store, registry, live),
         "counts": counts.get(live.row.id, {"windows": 0, "labelled": 0, "retracted": 0})}
        for live in models
    ]
    return render(request, "patients.html", {"user": user, "rows": rows})


def _patient_page(
    request: Request, user: Token | None, registry: RegistryDep, modality: str, patient_id: str, template: str
) -> Response:
    if user is None:
        return to_login()
    live: LiveModel | None = registry.get(modality, patient_id)
    if live is None:
        return render(
            request, "message.html",
            {"user": user, "title": "No such patient", "message": f"No {modality.upper()} model for patient '{patient_id}'."},
            404,
        )
    return render(
        request, template,
        {"user": user, "modality": modality, "patient_id": patient_id, "classes": class_keys(live.classes)},
    )


@router.get("/patients/{modality}/{patient_id}")
def label_queue(modality: Modality, patient_id: str, request: Request, user: User, registry: RegistryDep) -> Response:
    return _patient_page(request, user, registry, modality, patient_id, "label.html")


@router.get("/patients/{modality}/{patient_id}/timeline")
def timeline(modality: Modality, patient_id: str, request: Request, user: User, registry: RegistryDep) -> Response:
    return _patient_page(request, user, registry, modality, patient_id, "timeline.html")


@router.get("/patients/ecg/{patient_id}/templates")
def templates_view(patient_id: str, request: Request, user: User, registry: RegistryDep) -> Response:
    return _patient_page(request, user, registry, "ecg", patient_id, "templates.html")


@router.get("/patients/ecg/{patient_id}/strip")
def strip_view(patient_id: str, request: Request, user: User, registry: RegistryDep) -> Response:
    return _patient_page(request, user, registry, "ecg", patient_id, "strip.html")


@router.get("/patients/eeg/{patient_id}/pages")
def eeg_pages_view(patient_id: str, request: Request, user: User, registry: RegistryDep) -> Response:
    return _patient_page(request, user, registry, "eeg", patient_id, "eeg_pages.html")
