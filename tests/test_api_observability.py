"""What every answer carries (security headers, a request id), the one access line each request
leaves, and the 500 of an unhandled error: through the real app, over httpx's ASGI transport."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.logging_config import JsonFormatter
from app.models import User
from app.services.lead_reads import LeadReads
from tests.helpers import client_of, uid
from tests.support import READY_DEADLINE_SECONDS, Server, log_lines, server_launcher

LEADS = "/api/v1/leads"
STATISTICS = "/api/v1/leads/statistics"
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
API_CSP = "default-src 'none'; frame-ancestors 'none'"


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "app.access"]


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for directive in policy.split(";"):
        name, *values = directive.split()
        parsed[name] = values
    return parsed


class InlineScripts(HTMLParser):
    """The text of every <script> without a src attribute: what a browser hashes for CSP."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self._inline = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script" and not dict(attrs).get("src"):
            self._inline = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._inline = False

    def handle_data(self, data: str) -> None:
        if self._inline:
            self.scripts[-1] += data


def sha256_source(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


# ----------------------------------------------------------------------------- security headers


ANSWERS = [
    pytest.param("GET", "/health", {}, 200, id="200"),
    pytest.param("GET", "/openapi.json", {}, 200, id="openapi"),
    pytest.param("GET", LEADS, {}, 401, id="401"),
    pytest.param("GET", "/no/such/page", {}, 404, id="404"),
    pytest.param("DELETE", "/health", {}, 405, id="405"),
    pytest.param("GET", f"{LEADS}?limit=-1", {"auth": True}, 422, id="422"),
    pytest.param(
        "POST", LEADS, {"headers": {"Content-Length": str(10**9)}}, 413, id="413-body-limit"
    ),
]


@pytest.mark.parametrize(("method", "path", "options", "status"), ANSWERS)
async def test_every_kind_of_answer_carries_the_security_headers_and_no_store(
    client: httpx.AsyncClient,
    auth_headers: Callable[[User], dict[str, str]],
    agent: User,
    method: str,
    path: str,
    options: dict[str, Any],
    status: int,
) -> None:
    headers = dict(options.get("headers", {}))
    if options.get("auth"):
        headers.update(auth_headers(agent))
    response = await client.request(method, path, headers=headers)

    assert response.status_code == status, response.text
    assert_security_headers(response)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-security-policy"] == API_CSP


async def test_an_authenticated_answer_is_never_stored_by_a_cache(
    client: httpx.AsyncClient, auth_headers: Callable[[User], dict[str, str]], agent: User
) -> None:
    response = await client.get(LEADS, headers=auth_headers(agent))

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert_security_headers(response)


async def test_docs_assets_may_be_cached_but_keep_the_other_headers(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/docs-assets/swagger-ui.css")

    assert response.status_code == 200
    assert "cache-control" not in response.headers
    assert_security_headers(response)


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_a_docs_page_may_run_exactly_its_own_inline_scripts(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    parser = InlineScripts()
    parser.feed(response.text)

    policy = directives(response.headers["content-security-policy"])
    allowed = set(policy["script-src"])
    assert allowed == {"'self'"} | {sha256_source(script) for script in parser.scripts}
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert_security_headers(response)
    assert response.headers["cache-control"] == "no-store"


async def test_swagger_ui_page_is_allowed_its_start_up_script(client: httpx.AsyncClient) -> None:
    """Swagger UI starts itself from an inline script; a policy without its hash would leave
    the page blank."""
    response = await client.get("/docs")
    parser = InlineScripts()
    parser.feed(response.text)

    (start_up,) = [script for script in parser.scripts if "SwaggerUIBundle(" in script]
    policy = directives(response.headers["content-security-policy"])
    assert sha256_source(start_up) in policy["script-src"]
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]


# ----------------------------------------------------------------------------- request ids


async def test_a_sane_request_id_from_the_client_is_kept(client: httpx.AsyncClient) -> None:
    sent = "gateway-7f3a.B_91"
    response = await client.get("/health", headers={"X-Request-ID": sent})

    assert response.headers["x-request-id"] == sent


@pytest.mark.parametrize(
    "sent",
    ["x" * 129, "has spaces", 'quote"d', "semi;colon", "{json}", ""],
    ids=["too-long", "space", "quote", "semicolon", "braces", "empty"],
)
async def test_an_odd_request_id_from_the_client_is_replaced(
    client: httpx.AsyncClient, sent: str
) -> None:
    response = await client.get("/health", headers={"X-Request-ID": sent})

    assert GENERATED_ID.match(response.headers["x-request-id"]), response.headers["x-request-id"]


async def test_a_request_id_of_128_characters_is_kept(client: httpx.AsyncClient) -> None:
    sent = "a" * 128
    response = await client.get("/health", headers={"X-Request-ID": sent})

    assert response.headers["x-request-id"] == sent


async def test_each_request_without_an_id_gets_a_new_one(client: httpx.AsyncClient) -> None:
    first = await client.get("/health")
    second = await client.get("/health")

    ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert all(GENERATED_ID.match(found) for found in ids), ids
    assert ids[0] != ids[1]


# ----------------------------------------------------------------------------- access log


async def test_a_request_leaves_one_access_line_with_its_id_status_and_user(
    client: httpx.AsyncClient,
    auth_headers: Callable[[User], dict[str, str]],
    agent: User,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.access")
    response = await client.get(f"{LEADS}?search=Zebediah", headers=auth_headers(agent))

    assert response.status_code == 200, response.text
    (record,) = access_records(caplog)
    assert record.levelno == logging.INFO
    assert record.request_id == response.headers["x-request-id"]
    assert (record.method, record.path, record.status) == ("GET", LEADS, 200)
    assert isinstance(record.duration_ms, float) and record.duration_ms >= 0
    assert record.user_id == uid(agent)


async def test_the_access_line_leaves_out_the_query_string(
    client: httpx.AsyncClient,
    auth_headers: Callable[[User], dict[str, str]],
    agent: User,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Search terms are names and emails of people: not for a log."""
    caplog.set_level(logging.INFO, logger="app.access")
    await client.get(f"{LEADS}?search=Zebediah", headers=auth_headers(agent))

    (record,) = access_records(caplog)
    assert "Zebediah" not in JsonFormatter().format(record)


async def test_the_access_line_of_an_anonymous_request_has_a_null_user(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.access")
    response = await client.get(LEADS)

    (record,) = access_records(caplog)
    assert record.status == 401
    assert record.user_id is None
    line = json.loads(JsonFormatter().format(record))
    assert line["user_id"] is None
    assert line["request_id"] == response.headers["x-request-id"]


# ----------------------------------------------------------------------------- unhandled errors


@pytest.fixture
def broken_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    """The statistics service fails in a way nothing maps to an answer: a bug."""

    async def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("internal detail: dsn postgres://crm:hunter2@db/crm")

    monkeypatch.setattr(LeadReads, "statistics", staticmethod(fail))


@pytest.fixture
def raw_client(app: FastAPI) -> httpx.AsyncClient:
    """A client that gets the app's answer even if an exception escapes it (the default
    client would raise it in the test instead)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.mark.usefixtures("broken_statistics")
async def test_an_unhandled_error_is_a_500_with_the_request_id_and_no_internals(
    raw_client: httpx.AsyncClient, auth_headers: Callable[[User], dict[str, str]], agent: User
) -> None:
    headers = {**auth_headers(agent), "X-Request-ID": "trace-500"}
    async with raw_client:
        response = await raw_client.get(STATISTICS, headers=headers)

    assert response.status_code == 500
    assert response.json() == {
        "detail": "An unexpected error occurred.",
        "code": "internal_error",
        "request_id": "trace-500",
    }
    assert response.headers["x-request-id"] == "trace-500"
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert_security_headers(response)
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.usefixtures("broken_statistics")
async def test_an_unhandled_error_is_logged_once_with_its_traceback_and_request_id(
    raw_client: httpx.AsyncClient,
    auth_headers: Callable[[User], dict[str, str]],
    agent: User,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with raw_client:
        response = await raw_client.get(STATISTICS, headers=auth_headers(agent))

    request_id = response.headers["x-request-id"]
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, [record.getMessage() for record in errors]
    (error,) = errors
    assert error.request_id == request_id
    line = json.loads(JsonFormatter().format(error))
    assert line["level"] == "ERROR"
    assert line["request_id"] == request_id
    assert "Traceback" in line["exc_info"]
    assert "RuntimeError: internal detail" in line["exc_info"]
    assert STATISTICS in line["message"]


@pytest.mark.usefixtures("broken_statistics")
async def test_the_access_line_of_a_failed_request_says_500(
    raw_client: httpx.AsyncClient,
    auth_headers: Callable[[User], dict[str, str]],
    agent: User,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.access")
    async with raw_client:
        response = await raw_client.get(STATISTICS, headers=auth_headers(agent))

    (record,) = access_records(caplog)
    assert record.status == 500
    assert record.request_id == response.headers["x-request-id"]
    assert record.user_id == uid(agent)


# ------------------------------------------------------------- access log: client and worker


async def test_the_access_line_carries_the_client_address_and_the_worker_pid(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.access")
    async with client_of(app, client=("203.0.113.9", 51234)) as client:
        await client.get("/health")

    (record,) = access_records(caplog)
    assert record.client == "203.0.113.9"
    assert record.pid == os.getpid()
    line = json.loads(JsonFormatter().format(record))
    assert (line["client"], line["pid"]) == ("203.0.113.9", os.getpid())


def served_access_lines(server: Server, path: str) -> list[dict[str, Any]]:
    """The served app's access lines for `path` (they are written after the answer is sent,
    so they may be a moment behind it)."""
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    while True:
        lines = [
            line
            for line in log_lines(server.output())
            if line.get("logger") == "app.access" and line.get("path") == path
        ]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [("127.0.0.1", "198.51.100.20"), ("192.0.2.1", "127.0.0.1"), (None, "127.0.0.1")],
    ids=["from-a-trusted-proxy", "from-an-untrusted-peer", "trusting-no-proxy-by-default"],
)
def test_a_served_access_line_names_the_client_after_the_proxy_rule(
    tmp_path: Path, trusted: str | None, expected: str
) -> None:
    """uvicorn believes X-Forwarded-For only from FORWARDED_ALLOW_IPS (by default from no
    one); the line says whom it believed, and which worker process served the request."""
    with server_launcher(wait_until_ready=True) as start:
        proxies = {} if trusted is None else {"FORWARDED_ALLOW_IPS": trusted}
        server = start(tmp_path, **proxies)
        with server.client() as client:
            response = client.get("/health", headers={"X-Forwarded-For": "198.51.100.20"})
        assert response.status_code == 200
        (line,) = served_access_lines(server, "/health")

    assert line["client"] == expected
    assert line["pid"] == server.process.pid  # one worker: the server process itself
