"""`GET /leads/export` (issue 16): every lead the caller may see, as CSV or JSON Lines, in id
order, streamed."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import get_session_opener
from app.config import use_settings
from app.database import create_session_factory, upgrade_database
from app.main import create_app
from app.models import Lead, User
from app.models.types import utcnow
from app.schemas.lead import LeadRead
from app.seed import seed_demo
from app.services import LeadService, lead_export
from app.services.lead_export import spreadsheet_safe, unquote_cell
from tests.helpers import LeadFactory, committed_user, make_settings, uid
from tests.support import CLIENT_TIMEOUT_SECONDS, committed_database, own_engine, served

EXPORT = "/api/v1/leads/export"
FIELDS = list(LeadRead.model_fields)


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def export(client: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> Any:
    response = await client.get(EXPORT, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response


# ---------------------------------------------------------------------------------------- CSV


async def test_the_csv_has_every_lead_field_as_a_column(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    await make_lead()
    text = (await export(client, h)).text
    assert next(csv.reader(io.StringIO(text))) == FIELDS


async def test_each_lead_is_one_row_in_id_order_with_the_values_it_reads_with(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    ids = [uid(await make_lead(company=f"Co {n}")) for n in range(3)]
    rows = csv_rows((await export(client, h)).text)
    assert [int(row["id"]) for row in rows] == ids
    shown = (await client.get(f"/api/v1/leads/{ids[1]}", headers=h)).json()
    assert rows[1]["company"] == shown["company"] == "Co 1"
    assert rows[1]["email"] == shown["email"]
    assert rows[1]["lead_score"] == str(shown["lead_score"])
    assert rows[1]["created_at"] == shown["created_at"]  # ISO 8601, UTC, Z
    assert rows[1]["created_at"].endswith("Z")


async def test_tags_are_joined_with_semicolons_and_nulls_are_empty(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    await make_lead(tags=["vip", "q4"], company=None)
    [row] = csv_rows((await export(client, h)).text)
    assert row["tags"] == "vip;q4"
    assert (row["company"], row["archived_at"]) == ("", "")


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_cell_a_spreadsheet_would_run_gets_a_quote_and_the_import_takes_it_off(
    start: str,
) -> None:
    text = f'{start}HYPERLINK("http://x")'
    assert spreadsheet_safe(text) == "'" + text
    assert unquote_cell(spreadsheet_safe(text)) == text


def test_other_cells_are_left_as_they_are() -> None:
    for text in ("Acme", "'quoted already", "a=b", "O'Brien"):
        assert spreadsheet_safe(text) == text
        assert unquote_cell(text) == text


async def test_formula_looking_text_is_exported_quoted(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    await make_lead(company="=cmd|' /C calc'!A0", job_title="@SUM(A1)", phone="+1 555 010 2030")
    [row] = csv_rows((await export(client, h)).text)
    assert row["company"] == "'=cmd|' /C calc'!A0"
    assert row["job_title"] == "'@SUM(A1)"
    assert row["phone"] == "'+15550102030"


async def test_bom_true_starts_the_file_with_a_utf8_byte_order_mark(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    await make_lead(first_name="Zoë")
    with_bom = (await export(client, h, bom="true")).content
    without = (await export(client, h)).content
    assert with_bom == b"\xef\xbb\xbf" + without
    assert "Zoë" in without.decode("utf-8")


async def test_the_file_is_an_attachment_named_for_the_day(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await export(client, h)
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    day = f"{utcnow():%Y%m%d}"
    expected = f'attachment; filename="leads-{day}.csv"'
    assert response.headers["content-disposition"] == expected
    jsonl = await export(client, h, format="jsonl")
    assert jsonl.headers["content-disposition"] == f'attachment; filename="leads-{day}.jsonl"'


# --------------------------------------------------------------------------------- JSON Lines


async def test_each_json_line_is_the_lead_as_get_lead_answers_it(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    ids = [uid(await make_lead(tags=["vip"], estimated_value="1250.50")), uid(await make_lead())]
    response = await export(client, h, format="jsonl")
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = response.text.splitlines()
    assert len(lines) == 2
    for line, lead_id in zip(lines, ids, strict=True):
        shown = (await client.get(f"/api/v1/leads/{lead_id}", headers=h)).json()
        assert json.loads(line) == shown


# -------------------------------------------------------------------------- filters and scope


async def test_the_list_filters_choose_the_leads(
    client: httpx.AsyncClient, h: dict[str, str], make_lead: LeadFactory
) -> None:
    won = uid(await make_lead(status="WON"))
    await make_lead(status="NEW")
    rows = csv_rows((await export(client, h, status="WON")).text)
    assert [int(row["id"]) for row in rows] == [won]


async def test_archived_leads_only_with_include_archived(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    make_lead: LeadFactory,
    superuser: User,
) -> None:
    live, archived = uid(await make_lead()), uid(await make_lead())
    await LeadService.delete_lead(db, archived, user_id=uid(superuser))
    plain = csv_rows((await export(client, h)).text)
    everything = csv_rows((await export(client, h, include_archived="true")).text)
    assert [int(row["id"]) for row in plain] == [live]
    assert [int(row["id"]) for row in everything] == [live, archived]


async def test_an_agent_exports_their_own_leads_only(
    client: httpx.AsyncClient,
    make_lead: LeadFactory,
    agent: User,
    other_agent: User,
    auth_headers: Callable[[User], dict[str, str]],
) -> None:
    own = uid(await make_lead(owner=agent))
    await make_lead(owner=other_agent)
    await make_lead()
    rows = csv_rows((await export(client, auth_headers(agent))).text)
    assert [int(row["id"]) for row in rows] == [own]
    asked_for_others = await export(client, auth_headers(agent), assigned_to=uid(other_agent))
    assert csv_rows(asked_for_others.text) == []


async def test_an_unknown_format_is_refused_naming_it(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await client.get(EXPORT, headers=h, params={"format": "xlsx"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "format"]


# --------------------------------------------------------------------------------- streaming

LEADS = 2_000


class CountingSessions:
    """Real sessions, which count the rows the export has fetched from the database so far."""

    def __init__(self, engine: Any) -> None:
        self.factory = create_session_factory(engine, read_only=True)
        self.fetched = 0

    def __call__(self) -> Any:
        counter = self
        session = self.factory()
        real_stream = session.stream

        async def stream(*args: Any, **kwargs: Any) -> Any:
            result = await real_stream(*args, **kwargs)
            real_partitions = result.partitions

            async def partitions(*p_args: Any) -> Any:
                async for rows in real_partitions(*p_args):
                    counter.fetched += len(rows)
                    yield rows

            result.partitions = partitions  # type: ignore[method-assign]
            return result

        session.stream = stream  # type: ignore[method-assign]
        return session


async def test_the_first_rows_arrive_before_the_last_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that reads the first rows and then stops: the server has read only what the
    connection's buffers hold beyond them (a few MB), not all 2,000 leads (40 MB of CSV: each
    has 20 kB of notes)."""
    monkeypatch.setattr(lead_export, "BATCH_ROWS", 20)
    settings = make_settings()
    with use_settings(settings):
        async with committed_database(tmp_path, "crm_export") as url:
            engine = own_engine(url, pool_size=4)
            try:
                await upgrade_database(engine)
                admin, _ = await committed_user(engine, settings, superuser=True, email="a@x.io")
                async with create_session_factory(engine)() as db:
                    await seed_demo(db, leads=LEADS, agents=3)
                    await db.execute(update(Lead).values(notes="n" * 20_000))
                    await db.commit()
                app = create_app(engine=engine)
                sessions = CountingSessions(engine)

                async def counting() -> Any:
                    return sessions

                app.dependency_overrides[get_session_opener] = counting
                async with served(app) as serving:
                    first_lines = await read_then_pause(serving.url, admin, lines=20)
                    assert first_lines[0].split(",")[:2] == ["id", "first_name"]
                    assert 0 < sessions.fetched < LEADS
            finally:
                await engine.dispose()


async def read_then_pause(base_url: str, headers: dict[str, str], *, lines: int) -> list[str]:
    """GET the export on a socket with a small receive buffer, read the first `lines` lines,
    then hold the connection without reading for a moment: what the server fetched by then
    is what it needed to send that much, plus what the buffers took."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=16_384)
    request = f"GET {EXPORT} HTTP/1.1\r\nHost: {host}\r\n"
    request += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write((request + "\r\n").encode())
    got: list[str] = []
    async with asyncio.timeout(CLIENT_TIMEOUT_SECONDS):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        buffer = b""
        while len(got) < lines:
            data = await reader.read(4096)
            if not data:
                raise EOFError(f"the export ended after {len(got)} lines")
            buffer += data
            got = [line for line in buffer.decode(errors="replace").split("\r\n") if line]
    await asyncio.sleep(0.5)  # the server sends on until the buffers are full, then waits
    writer.close()
    # The body is chunked: drop the chunk-size lines.
    return [line for line in got if "," in line]
