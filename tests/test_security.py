"""Security properties, each a test that fails if it regresses: roles on every route, hashed tokens,
CORS closed by default, security headers and CSP, SQL never assembled from request values, request
size and media-type limits. The app runs in-process (its real lifespan, a temporary database)."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient

from app import server
from app import store as store_module
from app.settings import Settings
from signals.replay import ecg_reference, ecg_requests

ADMIN = "security-admin-token-0123456789abcdef"
MAX_BODY = 256 * 1024
# The roles each route admits besides admin, who may do everything; every other route: clinician.
ADMITS = {
    ("POST", "/v1/windows"): {"device"},
    ("POST", "/v1/models/{modality}/{patient_id}/rollback"): set(),
    ("POST", "/v1/tokens"): set(),
}
PUBLIC = {("GET", "/healthz")}
PATH_VALUES = {"modality": "ecg", "patient_id": "sec-1", "window_id": "1", "label_id": "1", "alarm_id": "1", "index": "0"}
MARKER = "zqx7"  # in every string a request carries into the store


class RecordingConnection(sqlite3.Connection):
    """A connection that records the SQL text of every statement, before any parameter is bound."""

    statements: ClassVar[list[str]] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self.statements.append(sql)
        return super().execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self.statements.append(sql)
        return super().executemany(sql, *args)

    def executescript(self, script: str) -> sqlite3.Cursor:
        self.statements.append(script)
        return super().executescript(script)


@pytest.fixture(scope="module")
def statements() -> list[str]:
    return RecordingConnection.statements


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app on a temporary database; every connection the store opens records its statements."""
    db = tmp_path_factory.mktemp("security") / "biofo.db"
    settings = Settings(db=db, admin_token=ADMIN, max_body_bytes=MAX_BODY)
    patch = pytest.MonkeyPatch()
    patch.setattr(store_module.sqlite3, "connect", partial(sqlite3.connect, factory=RecordingConnection))
    try:
        with TestClient(server.create_app(settings), base_url="http://127.0.0.1") as test_client:
            yield test_client
    finally:
        patch.undo()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def tokens(client: TestClient) -> dict[str, str]:
    made = {"admin": ADMIN}
    for role in ("device", "clinician"):
        response = client.post("/v1/tokens", json={"role": role, "name": f"{MARKER} {role}"}, headers=bearer(ADMIN))
        assert response.status_code == 201
        made[role] = response.json()["token"]
    return made


def guarded_routes(client: TestClient) -> list[tuple[str, str]]:
    """Every operation of the OpenAPI document except the public ones."""
    paths = client.get("/openapi.json").json()["paths"]
    routes = [(method.upper(), path) for path, operations in paths.items() for method in operations]
    assert ("POST", "/v1/labels") in routes and ("GET", "/metrics") in routes
    return [route for route in routes if route not in PUBLIC]


def test_every_route_needs_a_token_of_the_right_role(client: TestClient, tokens: dict[str, str]) -> None:
    """No token or an unknown one: 401. A role the route does not admit: 403. Checked before the body is
    read, so an empty body is enough."""
    checked = 0
    for method, path in guarded_routes(client):
        url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
        admitted = ADMITS.get((method, path), {"clinician"}) | {"admin"}
        for presented, expected in ((None, {401}), ("not-a-token", {401})):
            headers = bearer(presented) if presented else {}
            status = client.request(method, url, headers=headers).status_code
            assert status in expected, (method, path, presented, status)
        for role, token in tokens.items():
            status = client.request(method, url, headers=bearer(token)).status_code
            if role in admitted:
                assert status not in (401, 403), (method, path, role, status)
            else:
                assert status == 403, (method, path, role, status)
        checked += 1
    assert checked >= 16
    # The concrete cases the issue names.
    assert client.post("/v1/labels", json={"labels": []}, headers=bearer(tokens["device"])).status_code == 403
    rollback = client.post("/v1/models/ecg/sec-1/rollback", json={"version": 0}, headers=bearer(tokens["clinician"]))
    assert rollback.status_code == 403


def test_page_refuses_device_tokens(client: TestClient, tokens: dict[str, str]) -> None:
    origin = {"Origin": "http://127.0.0.1"}
    assert client.post("/login", data={"token": tokens["device"]}, headers=origin,
                       follow_redirects=False).status_code == 403
    client.cookies.set("biofo_session", tokens["device"])
    try:
        page = client.get("/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] == "/login"
    finally:
        client.cookies.clear()


def test_tokens_are_stored_only_as_hashes(client: TestClient, tokens: dict[str, str]) -> None:
    with sqlite3.connect(client.app.state.settings.db) as conn:
        rows = conn.execute("SELECT * FROM tokens").fetchall()
        dump = "\n".join(conn.iterdump())
    assert len(rows) == 3
    for role, token in tokens.items():
        assert token not in dump, role
        assert hashlib.sha256(token.encode()).hexdigest() in dump, role


def test_cors_is_closed_by_default_and_opens_only_to_configured_origins(client: TestClient, tmp_path: Path) -> None:
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    closed = client.options("/v1/windows", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    simple = client.get("/v1/models", headers={"Origin": "https://elsewhere.example", **bearer(ADMIN)})
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers
    settings = Settings(db=tmp_path / "cors.db", admin_token=ADMIN, cors_origins=("https://ward.example",))
    with TestClient(server.create_app(settings)) as opened:
        allowed = opened.options("/v1/windows", headers={**preflight, "Origin": "https://ward.example"})
        assert allowed.headers.get("access-control-allow-origin") == "https://ward.example"
        refused = opened.options("/v1/windows", headers=preflight)
        assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize("path", ["/login", "/v1/models", "/v1/windows/999", "/healthz", "/openapi.json"])
def test_security_headers_and_csp_on_every_answer(client: TestClient, path: str) -> None:
    response = client.get(path, headers=bearer(ADMIN))
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] in ("no-referrer", "same-origin")
    policy = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'"
    assert "'unsafe-inline'" not in policy["script-src"] and "'unsafe-eval'" not in policy["script-src"]
    assert policy["frame-ancestors"] == "'none'"


def test_request_size_and_media_type_limits(client: TestClient, tokens: dict[str, str]) -> None:
    headers = {**bearer(tokens["device"]), "Content-Type": "application/json"}
    declared = client.post("/v1/windows", content=b" " * (MAX_BODY + 1), headers=headers)
    assert declared.status_code == 413 and "body" in str(declared.json()["detail"])

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(MAX_BODY // 4096 + 2):
            yield b" " * 4096

    streamed = client.post("/v1/windows", content=chunks(), headers=headers)
    assert streamed.status_code == 413 and "BIOFO_MAX_BODY_BYTES" in str(streamed.json()["detail"])
    for refused in (declared, streamed):
        assert refused.headers["X-Content-Type-Options"] == "nosniff"
    wrong_type = client.post("/v1/windows", content=b"{}", headers={**bearer(tokens["device"]), "Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and wrong_type.json()["detail"][0]["loc"] == ["header", "content-type"]


def test_no_request_value_ever_reaches_sql_text(client: TestClient, tokens: dict[str, str], statements: list[str]) -> None:
    """Every string a request can carry into the store holds the marker; the SQL text of every statement
    the store ran (recorded before parameters are bound) must not contain it."""
    patient = f"bed-{MARKER}"
    doc = bearer(tokens["clinician"])
    body = next(ecg_requests("100", minutes=0.2, patient_id=patient))
    body["channels"] = [f"{MARKER} MLII", f"{MARKER}' V5"]
    windows = client.post("/v1/windows", json=body, headers=bearer(tokens["device"])).json()["windows"]
    reference = ecg_reference("100")
    labels = [{"window_id": w["id"], "label": reference.label_at(w["offset_s"]) or "N", "labeled_by": f"{MARKER}'; --"}
              for w in windows[:3]]
    accepted = client.post("/v1/labels", json={"labels": labels}, headers=doc)
    assert accepted.status_code == 202
    label_id = accepted.json()["label_ids"][0]
    for path, params in (("/v1/windows", {"patient_id": patient, "labeled": "true"}),
                         (f"/v1/windows/{windows[0]['id']}", {}), (f"/v1/labels/{label_id}", {}),
                         (f"/v1/models/ecg/{patient}", {}), (f"/v1/models/ecg/{patient}/prequential", {}),
                         (f"/v1/models/ecg/{patient}/checkpoints", {}), ("/v1/energy", {"phase": "update"})):
        assert client.get(path, params=params, headers=doc).status_code == 200, path
    assert client.post(f"/v1/labels/{label_id}/undo", json={"retracted_by": f"{MARKER}\" OR 1=1"},
                       headers=doc).status_code == 200
    assert client.get(f"/v1/models/ecg/{MARKER}'x", headers=doc).status_code == 404
    assert client.get("/v1/models", headers=bearer(f"{MARKER}-token")).status_code == 401
    client.cookies.set("biofo_session", tokens["clinician"])
    try:
        assert client.get(f"/patients/ecg/{patient}").status_code == 200
    finally:
        client.cookies.clear()
    executed = "\n".join(statements)
    for table in ("windows", "labels", "retractions", "tokens"):
        assert f"INSERT INTO {table}" in executed, table
    leaked = [sql for sql in statements if MARKER in sql.lower()]
    assert leaked == []
