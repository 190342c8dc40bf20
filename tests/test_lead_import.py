"""`POST /leads/import` (issue 16): CSV files as spreadsheets write them, row by row into
leads, with a report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import use_settings
from app.models import Lead, LeadEvent, LeadImport, User
from tests.helpers import LeadFactory, app_in_session, client_of, leads_csv, make_settings, uid

IMPORT = "/api/v1/leads/import"
CSV = {"Content-Type": "text/csv"}


async def send(
    client: httpx.AsyncClient, headers: dict[str, str], body: str | bytes, **params: Any
) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return await client.post(IMPORT, content=content, headers={**headers, **CSV}, params=params)


async def imported(
    client: httpx.AsyncClient, headers: dict[str, str], body: str | bytes, **params: Any
) -> dict[str, Any]:
    response = await send(client, headers, body, **params)
    assert response.status_code == 200, response.text
    return response.json()


async def leads(db: AsyncSession) -> list[Lead]:
    return list(await db.scalars(select(Lead).order_by(Lead.id)))


async def lead_count(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(Lead)) or 0)


# ------------------------------------------------------------------------- what files hold


async def test_a_plain_file_creates_a_scored_lead_per_row(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    body = (
        "first_name,last_name,email,company\n"
        "Ada,Lovelace,ada@acme.com,Acme\n"
        "Alan,Turing,alan@x.org,\n"
    )
    report = await imported(client, h, body)
    assert (report["total_rows"], report["created"], report["skipped"]) == (2, 2, 0)
    assert report["status"] == "done" and report["import_id"] is not None
    ada, alan = await leads(db)
    assert (ada.first_name, ada.email, ada.company) == ("Ada", "ada@acme.com", "Acme")
    assert ada.lead_score > 0 and not ada.score_is_manual
    assert "Created (score" in (alan.notes or "")


async def test_a_bom_semicolons_and_spreadsheet_headers_are_understood(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    body = (
        "\ufeffFirst Name;Last Name;E-mail;Phone Number;Company Name;Lead Source;Tags\n"
        "Grace;Hopper;GRACE@Navy.mil;+1 (555) 010-2030;US Navy;Referral;vip, navy\n"
    )
    await imported(client, h, body.encode("utf-8"))
    [grace] = await leads(db)
    # The email as POST /leads stores it: the domain lowercased, the local part as given.
    assert (grace.first_name, grace.email) == ("Grace", "GRACE@navy.mil")
    assert grace.phone == "+15550102030"
    assert (grace.company, grace.source.value, sorted(grace.tags)) == (
        "US Navy",
        "REFERRAL",
        ["navy", "vip"],
    )


async def test_a_quoted_cell_may_hold_line_breaks(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    body = (
        "first_name,last_name,email,notes\n"
        'Ada,Lovelace,ada@x.io,"Met at the fair.\nWants a demo, soon."\n'
        "Alan,Turing,alan@x.io,\n"
    )
    report = await imported(client, h, body)
    assert (report["total_rows"], report["created"]) == (2, 2)
    ada, _ = await leads(db)
    assert "Met at the fair.\nWants a demo, soon." in (ada.notes or "")


async def test_tab_separated_files_and_the_delimiter_parameter(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    await imported(client, h, "first_name\tlast_name\temail\nAda\tLovelace\tada@x.io\n")
    # One column only, so nothing to sniff: the delimiter is said.
    piped = "first_name|last_name|email\nAlan|Turing|alan@x.io\n"
    await imported(client, h, piped, delimiter="|")
    assert [lead.last_name for lead in await leads(db)] == ["Lovelace", "Turing"]


async def test_excel_style_and_iso_dates_are_read_as_utc(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    body = (
        "first_name,last_name,email,last_contact_date,next_follow_up_date\n"
        "Ada,Lovelace,ada@x.io,12/1/2026 2:30 PM,2026-12-24T09:00:00Z\n"
        "Alan,Turing,alan@x.io,3/7/2026,\n"
    )
    await imported(client, h, body)
    ada, alan = await leads(db)
    assert ada.last_contact_date is not None and ada.next_follow_up_date is not None
    assert ada.last_contact_date.isoformat() == "2026-12-01T14:30:00+00:00"
    assert ada.next_follow_up_date.isoformat() == "2026-12-24T09:00:00+00:00"
    assert alan.last_contact_date is not None
    assert alan.last_contact_date.isoformat() == "2026-03-07T00:00:00+00:00"


async def test_unknown_columns_are_reported_not_fatal(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    body = "first_name,last_name,email,Favourite Colour,id\nAda,Lovelace,ada@x.io,blue,77\n"
    report = await imported(client, h, body)
    assert report["unknown_columns"] == ["Favourite Colour"]  # `id`: the export's, ignored
    assert report["created"] == 1


async def test_a_mapping_names_the_columns_the_aliases_miss(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    body = "first_name,last_name,email,Firma\nAda,Lovelace,ada@x.io,Acme\n"
    await imported(client, h, body, mapping='{"Firma": "company"}')
    [ada] = await leads(db)
    assert ada.company == "Acme"


async def test_a_multipart_upload_works_like_a_csv_body(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    files = {"file": ("leads.csv", b"first_name,last_name,email\nAda,Lovelace,ada@x.io\n")}
    response = await client.post(IMPORT, files=files, headers=h)
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1


# ------------------------------------------------------------------------------ bad rows


BAD_ROW = "first_name,last_name,email\nAda,Lovelace,ada@x.io\nBob,Bad,not-an-email\nCy,Ok,cy@x.io\n"


async def test_abort_refuses_the_file_naming_each_bad_row_and_imports_nothing(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    response = await send(client, h, BAD_ROW)
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "file", 3, "email"]
    assert "Row 3" in error["msg"]
    assert await lead_count(db) == 0
    assert await db.scalar(select(func.count()).select_from(LeadImport)) == 0


async def test_skip_imports_the_good_rows_and_reports_the_bad_one(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    report = await imported(client, h, BAD_ROW, on_error="skip")
    assert (report["created"], report["skipped"]) == (2, 1)
    [error] = report["errors"]
    assert (error["row"], error["column"], error["value"]) == (3, "email", "not-an-email")
    assert "email" in error["message"].lower()
    assert [lead.first_name for lead in await leads(db)] == ["Ada", "Cy"]


async def test_a_row_is_checked_as_post_leads_checks_a_lead(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    body = (
        "first_name,last_name,email,phone,lead_score,status\n"
        "Ada,Lovelace,,,,\n"  # neither email nor phone
        "Bob,B,b@x.io,,101,\n"  # score out of range
        "Cy,C,c@x.io,,,MAYBE\n"  # no such status
        ",D,d@x.io,,,\n"  # no first name
    )
    report = await imported(client, h, body, on_error="skip")
    assert report["created"] == 0
    assert [(e["row"], e["column"]) for e in report["errors"]] == [
        (2, "email"),
        (3, "lead_score"),
        (4, "status"),
        (5, "first_name"),
    ]


async def test_dry_run_reports_everything_and_writes_nothing(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], make_lead: LeadFactory
) -> None:
    await make_lead(email="ada@x.io", company="Old")
    body = "first_name,last_name,email,company\nAda,Lovelace,ADA@x.io,New\nAlan,Turing,alan@x.io,\n"
    report = await imported(client, h, body, mode="upsert", dry_run="true")
    assert (report["created"], report["updated"], report["dry_run"]) == (1, 1, True)
    [ada] = await leads(db)
    await db.refresh(ada)
    assert ada.company == "Old"
    events = select(func.count()).where(LeadEvent.import_id == report["import_id"])
    assert await db.scalar(events) == 0


async def test_an_import_shows_its_report_again_dry_runs_too(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    body = "first_name,last_name,email\nAda,Lovelace,ada@x.io\nAl,T,nope\n"
    report = await imported(client, h, body, on_error="skip", dry_run="true")
    shown = await client.get(f"/api/v1/imports/{report['import_id']}", headers=h)
    assert shown.status_code == 200
    job = shown.json()
    assert (job["status"], job["dry_run"], job["processed_rows"]) == ("done", True, 2)
    assert job["report"] == report


async def test_a_form_with_more_than_the_file_is_refused_naming_the_body(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    files = {"file": ("a.csv", b"first_name,last_name,email\nA,B,a@x.io\n", "text/csv")}
    sent = await client.post(IMPORT, files=files, data={"extra": "1"}, headers=h)
    assert sent.status_code == 422, sent.text
    assert sent.json()["errors"][0]["loc"] == ["body"]


async def test_a_file_that_is_not_utf8_is_refused_naming_it(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await send(client, h, "first_name,last_name\nZoë,X\n".encode("latin-1"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "file"]


async def test_a_file_without_name_columns_is_refused(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    response = await send(client, h, "email\nada@x.io\n")
    assert response.status_code == 422
    assert "first name" in response.json()["errors"][0]["msg"]


async def test_more_rows_than_import_max_rows_is_refused(h: dict[str, str], app: Any) -> None:
    with use_settings(make_settings(import_max_rows=2)):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            body = "first_name,last_name,email\n" + "A,B,a@x.io\n" * 3
            response = await send(client, h, body)
    assert response.status_code == 422
    assert "more than 2 rows" in response.json()["errors"][0]["msg"]


async def test_a_file_over_import_max_bytes_is_413_and_other_bodies_keep_their_limit(
    engine: Any, db: AsyncSession, h: dict[str, str]
) -> None:
    with use_settings(make_settings(import_max_bytes=4096, max_body_bytes=2048)):
        async with client_of(app_in_session(engine, db)) as client:
            rows = b"Ada,Lovelace,ada@x.io\n" * 150  # 3.3 kB: over 2048, under 4096
            fits = await send(client, h, b"first_name,last_name,email\n" + rows)
            too_big = await send(client, h, b"first_name,last_name,email\n" + rows * 2)
            lead = {"first_name": "A", "last_name": "B", "email": "a@x.io", "notes": "x" * 3000}
            other = await client.post("/api/v1/leads", json=lead, headers=h)
    assert fits.status_code == 200, fits.text
    assert (too_big.status_code, too_big.json()["code"]) == (413, "request_too_large")
    assert other.status_code == 413


# -------------------------------------------------------------------------------- upsert


async def test_upsert_updates_the_lead_with_the_email_whatever_its_case(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], make_lead: LeadFactory
) -> None:
    lead_id = uid(await make_lead(email="ada@acme.com", company="Old"))
    body = "first_name,last_name,email,company\nAda,Lovelace,ADA@Acme.COM,New Co\n"
    report = await imported(client, h, body, mode="upsert")
    assert (report["created"], report["updated"]) == (0, 1)
    lead = await db.get(Lead, lead_id, populate_existing=True)
    assert lead is not None and lead.company == "New Co"
    assert "company" in (lead.notes or "")  # the change is in the history, as a PATCH's is
    event = await db.scalar(select(LeadEvent).order_by(LeadEvent.id.desc()).limit(1))
    assert event is not None
    assert (event.type, event.import_id) == ("lead.updated", report["import_id"])


async def test_upsert_matches_by_phone_when_there_is_no_email(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], make_lead: LeadFactory
) -> None:
    await make_lead(email=None, phone="+1 555 010 2030")
    body = "first_name,last_name,phone,job_title\nAda,Lovelace,(555) 010-2030,CTO\n"
    body = body.replace("(555)", "+1 (555)")
    report = await imported(client, h, body, mode="upsert")
    assert report["updated"] == 1


async def test_insert_mode_never_updates(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str], make_lead: LeadFactory
) -> None:
    await make_lead(email="ada@acme.com")
    report = await imported(client, h, "first_name,last_name,email\nAda,L,ada@acme.com\n")
    assert report["created"] == 1
    assert await lead_count(db) == 2


async def test_a_created_lead_has_its_event_naming_the_import(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    report = await imported(client, h, "first_name,last_name,email\nAda,L,ada@x.io\n")
    event = await db.scalar(select(LeadEvent))
    assert event is not None
    assert (event.type, event.import_id) == ("lead.created", report["import_id"])


async def test_two_rows_for_one_lead_in_one_file_the_second_is_refused(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    body = "first_name,last_name,email\nAda,L,ada@x.io\nAda,Again,ADA@x.io\n"
    report = await imported(client, h, body, mode="upsert", on_error="skip")
    assert report["created"] == 1
    assert [(e["row"], e["column"]) for e in report["errors"]] == [(3, "email")]


# --------------------------------------------------------------------------------- agents


async def test_an_agents_rows_are_the_agents_own_leads(
    client: httpx.AsyncClient,
    db: AsyncSession,
    agent: User,
    auth_headers: Callable[[User], dict[str, str]],
) -> None:
    await imported(client, auth_headers(agent), "first_name,last_name,email\nAda,L,ada@x.io\n")
    [lead] = await leads(db)
    assert lead.assigned_to == uid(agent)


async def test_an_agent_cannot_update_another_agents_lead_through_an_import(
    client: httpx.AsyncClient,
    db: AsyncSession,
    agent: User,
    other_agent: User,
    make_lead: LeadFactory,
    auth_headers: Callable[[User], dict[str, str]],
) -> None:
    theirs = uid(await make_lead(owner=other_agent, email="ada@x.io", company="Theirs"))
    body = "first_name,last_name,email,company\nAda,L,ada@x.io,Mine now\n"
    report = await imported(client, auth_headers(agent), body, mode="upsert")
    assert (report["updated"], report["created"]) == (0, 1)  # a lead of the agent's own
    lead = await db.get(Lead, theirs, populate_existing=True)
    assert lead is not None and lead.company == "Theirs"


async def test_an_agent_may_not_assign_rows_to_someone_else(
    client: httpx.AsyncClient,
    agent: User,
    other_agent: User,
    auth_headers: Callable[[User], dict[str, str]],
) -> None:
    body = f"first_name,last_name,email,assigned_to\nAda,L,ada@x.io,{uid(other_agent)}\n"
    report = await imported(client, auth_headers(agent), body, on_error="skip")
    assert report["created"] == 0
    assert report["errors"][0]["row"] == 2


async def test_a_superuser_assigns_rows_to_active_users_only(
    client: httpx.AsyncClient,
    db: AsyncSession,
    h: dict[str, str],
    agent: User,
    inactive_user: User,
) -> None:
    body = (
        "first_name,last_name,email,assigned_to\n"
        f"Ada,L,ada@x.io,{uid(agent)}\n"
        f"Bob,B,bob@x.io,{uid(inactive_user)}\n"
    )
    report = await imported(client, h, body, on_error="skip")
    assert report["created"] == 1
    assert [(e["row"], e["column"]) for e in report["errors"]] == [(3, "assigned_to")]


# ----------------------------------------------------------------------------- round trip


async def test_an_export_reimports_as_unchanged_for_every_row(
    client: httpx.AsyncClient, db: AsyncSession, h: dict[str, str]
) -> None:
    body = (
        "First Name,Last Name,Email,Phone,Company,Job Title,Lead Source,Status,Tags,"
        "Probability,Estimated Value,Last Contact Date,Notes\n"
        "Ada,Lovelace,ada@acme.com,+1 555 010 2030,=Acme,CTO,Referral,Contacted,vip;q4,"
        "0.4,1250.50,12/1/2026 2:30 PM,Met at the fair.\n"
        'Alan,Turing,,+44 20 7946 0018,,,Website,New,,,,,"two\nlines"\n'
        "Grace,Hopper,grace@navy.mil,,US Navy,,,,,,,,\n"
    )
    first = await imported(client, h, body)
    assert first["created"] == 3
    before = [(lead.id, lead.version, lead.notes) for lead in await leads(db)]
    exported = await client.get("/api/v1/leads/export", headers=h)

    again = await imported(client, h, exported.content, mode="upsert")

    assert (again["unchanged"], again["updated"], again["created"]) == (3, 0, 0)
    assert again["errors"] == [] and again["unknown_columns"] == []
    db.expire_all()
    assert [(lead.id, lead.version, lead.notes) for lead in await leads(db)] == before


@pytest.mark.parametrize("mode", ["insert", "upsert"])
async def test_an_empty_file_with_a_header_imports_nothing(
    client: httpx.AsyncClient, h: dict[str, str], mode: str
) -> None:
    report = await imported(client, h, "first_name,last_name,email\n", mode=mode)
    assert (report["total_rows"], report["created"]) == (0, 0)


# ---------------------------------------------------------------- imported in the background


async def test_a_file_over_import_sync_max_rows_is_queued_with_where_to_follow_it(
    h: dict[str, str], app: Any, db: AsyncSession
) -> None:
    with use_settings(make_settings(import_sync_max_rows=2)):
        async with client_of(app) as client:
            queued = await send(client, h, leads_csv(3), on_error="skip")
            followed = await client.get(queued.headers.get("Location", "/none"), headers=h)
    assert queued.status_code == 202, queued.text
    job = queued.json()
    assert queued.headers["Location"] == f"/api/v1/imports/{job['import_id']}"
    assert (job["status"], job["processed_rows"], job["total_rows"]) == ("queued", 0, 3)
    assert (job["on_error"], job["report"]) == ("skip", None)
    assert followed.json() == job
    assert await lead_count(db) == 0  # a worker imports it (tests/test_import_workers.py)


async def test_a_large_file_that_cannot_be_read_is_refused_at_once(
    h: dict[str, str], app: Any
) -> None:
    with use_settings(make_settings(import_sync_max_rows=2)):
        async with client_of(app) as client:
            refused = await send(client, h, b"email\n" + b"a@x.io\n" * 5)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body", "file"]


async def test_an_import_that_is_not_there_is_404(client: httpx.AsyncClient, h: dict) -> None:
    answer = await client.get("/api/v1/imports/4040", headers=h)
    assert (answer.status_code, answer.json()["code"]) == (404, "import_not_found")
