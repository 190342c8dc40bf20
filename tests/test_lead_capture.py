"""Capture forms (issue 17): managed by superusers, posted to by web pages without a login.
What a page posts becomes a lead (source, tags and assignee from the form), or a note on the
person's lead on file; bots filling the honeypot and senders over the rate limit store nothing.
CORS is the form's own. Several server processes at once: tests/test_capture_workers.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.config import Settings, use_settings
from app.models import CaptureForm, Lead, LeadEvent, User
from app.services.security import secret_digest
from tests.helpers import app_in_session, client_of, make_settings, wait_for_a_fresh_minute

FORMS = "/api/v1/capture-forms"
CAPTURE = "/api/v1/capture"
SITE = "https://www.example.com"
README = Path(__file__).resolve().parents[1] / "README.md"
PERSON = {"first_name": "Jane", "last_name": "Smith", "email": "jane@acme.com"}


async def make_form(client: httpx.AsyncClient, h: dict[str, str], **fields: object) -> dict:
    body = {"name": "Contact us", "allowed_origins": [SITE], "tags": ["inbound"], **fields}
    response = await client.post(FORMS, json=body, headers=h)
    assert response.status_code == 201, response.text
    return response.json()


async def submit(client: httpx.AsyncClient, form: dict, **kwargs: object) -> httpx.Response:
    return await client.post(f"{CAPTURE}/{form['public_key']}", **kwargs)  # type: ignore[arg-type]


async def leads_of(db: AsyncSession) -> list[Lead]:
    return list(
        await db.scalars(select(Lead).order_by(Lead.id).execution_options(populate_existing=True))
    )


async def count(db: AsyncSession, model: type) -> int:
    return int(await db.scalar(select(func.count()).select_from(model)) or 0)


# --- managing forms ----------------------------------------------------------------------------


async def test_a_new_form_answers_its_public_key_once_and_stores_only_its_digest(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    form = await make_form(client, h)

    shown = (await client.get(f"{FORMS}/{form['id']}", headers=h)).json()
    listed = (await client.get(FORMS, headers=h)).json()
    row = await db.scalar(select(CaptureForm).execution_options(populate_existing=True))

    assert len(form["public_key"]) >= 32
    assert "public_key" not in shown and form["public_key"] not in str(listed)
    assert shown["key_hint"] == form["public_key"][:8]
    assert row is not None and row.key_digest == secret_digest(form["public_key"])
    assert form["public_key"] not in str(row.__dict__)


async def test_origins_are_kept_lowercased_and_a_path_is_refused(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    form = await make_form(client, h, allowed_origins=["https://WWW.Example.com:8443"])
    refused = await client.post(
        FORMS, json={"name": "X", "allowed_origins": ["https://example.com/contact"]}, headers=h
    )

    assert form["allowed_origins"] == ["https://www.example.com:8443"]
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"][:3] == ["body", "allowed_origins", 0]


async def test_a_form_naming_a_rule_that_does_not_exist_is_404_and_not_stored(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    response = await client.post(FORMS, json={"name": "X", "assignment_rule_id": 4242}, headers=h)

    assert response.status_code == 404
    assert response.json()["code"] == "assignment_rule_not_found"
    assert await count(db, CaptureForm) == 0


async def test_a_form_can_be_changed_and_deleted(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    form = await make_form(client, h)

    changed = await client.patch(
        f"{FORMS}/{form['id']}", json={"source": "FACEBOOK", "tags": ["Ads"]}, headers=h
    )
    deleted = await client.delete(f"{FORMS}/{form['id']}", headers=h)
    after = await submit(client, form, json=PERSON)

    assert (changed.json()["source"], changed.json()["tags"]) == ("FACEBOOK", ["ads"])
    assert deleted.status_code == 204
    assert after.status_code == 404


async def test_a_rotated_key_replaces_the_old_one_at_once(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    form = await make_form(client, h)

    rotated = (await client.post(f"{FORMS}/{form['id']}/rotate-key", headers=h)).json()
    old = await submit(client, form, json=PERSON)
    new = await submit(client, rotated, json=PERSON)

    assert rotated["public_key"] != form["public_key"]
    assert old.status_code == 404
    assert old.json()["code"] == "capture_form_not_found"
    assert new.status_code == 202
    assert len(await leads_of(db)) == 1


# --- submissions -------------------------------------------------------------------------------


async def test_a_plain_html_form_post_makes_a_lead_with_the_forms_source_and_tags(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    form = await make_form(client, h, source="WEBSITE", tags=["inbound", "spring"])

    # What a browser sends for <form method="post">: urlencoded, a submit button's name too.
    response = await submit(
        client,
        form,
        content="first_name=Jane&last_name=Smith&email=jane%40acme.com&phone=&company=Acme+Inc"
        "&message=Call+me+about+pricing%21&website=&send=Send",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 202, response.text
    assert response.json() == {"status": "received"}
    [lead] = await leads_of(db)
    assert (lead.first_name, lead.email, lead.phone, lead.company) == (
        "Jane",
        "jane@acme.com",
        None,
        "Acme Inc",
    )
    assert (lead.source, lead.tags, lead.created_by) == ("WEBSITE", ["inbound", "spring"], None)
    assert lead.lead_score == 85  # 50 + WEBSITE 15 + company 10 + business email 10
    assert "Captured via form Contact us" in lead.notes
    assert "Call me about pricing!" in lead.notes


async def test_a_json_submission_makes_a_lead_and_its_created_event(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    form = await make_form(client, h)

    response = await submit(client, form, json={**PERSON, "message": "Hello"})

    assert response.status_code == 202
    [lead] = await leads_of(db)
    events = list(await db.scalars(select(LeadEvent).where(LeadEvent.lead_id == lead.id)))
    assert [(e.type, e.actor_id, e.note) for e in events] == [("lead.created", None, "Hello")]


async def test_the_readme_form_posts_a_lead(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    """The copy-paste form in the README: its action and field names are what the endpoint
    takes."""
    form = await make_form(client, h)
    page = README_FORM.search(README.read_text())
    assert page is not None, "README.md shows an HTML <form> posting to /api/v1/capture/"
    fields = FormFields()
    fields.feed(page.group(0))
    values = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.org"}
    sent = {name: values.get(name, "") for name in fields.names}

    response = await client.post(
        f"{CAPTURE}/{form['public_key']}",
        data=sent,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert fields.action.startswith(f"{CAPTURE}/") or f"{CAPTURE}/" in fields.action
    assert {"first_name", "last_name", "email", "website"} <= set(fields.names)
    assert response.status_code == 202, response.text
    assert [lead.email for lead in await leads_of(db)] == ["ada@example.org"]


README_FORM = re.compile(r"<form[^>]*action=\"[^\"]*/api/v1/capture/[^>]*>.*?</form>", re.S)


class FormFields(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.action = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "form":
            self.action = named.get("action") or ""
        elif tag in ("input", "textarea") and named.get("name"):
            self.names.append(str(named["name"]))


async def test_an_invalid_submission_is_refused_naming_the_field_without_echoing_values(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    form = await make_form(client, h)

    response = await submit(
        client, form, data={"first_name": "Jane", "last_name": "Smith", "email": "jane-at-acme"}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "email"]
    assert "jane-at-acme" not in response.text
    assert await leads_of(db) == []


async def test_a_submission_without_a_name_is_refused_naming_it(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    form = await make_form(client, h)

    response = await submit(client, form, data={"last_name": "Smith", "email": "j@acme.com"})

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "first_name"]


async def test_a_submission_needs_an_email_or_a_phone(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    form = await make_form(client, h)

    response = await submit(
        client, form, data={"first_name": "Jane", "last_name": "Smith", "email": "", "phone": ""}
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "email"]
    assert await leads_of(db) == []


async def test_a_form_with_too_many_fields_is_refused_with_422(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    form = await make_form(client, h)
    stuffed = {**PERSON, **{f"extra{n}": "x" for n in range(200)}}

    response = await submit(client, form, data=stuffed)

    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body"]
    assert await leads_of(db) == []


async def test_a_body_over_the_limit_is_refused_with_413(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, settings: Settings
) -> None:
    form = await make_form(client, h)

    response = await submit(
        client, form, data={**PERSON, "message": "x" * (settings.max_body_bytes + 1)}
    )

    assert response.status_code == 413
    assert await leads_of(db) == []


async def test_another_media_type_is_refused_with_415(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    form = await make_form(client, h)

    response = await submit(
        client, form, content=b"Jane Smith", headers={"Content-Type": "text/plain"}
    )

    assert response.status_code == 415
    assert "application/x-www-form-urlencoded" in response.json()["detail"]


async def test_a_key_no_form_has_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{CAPTURE}/cf_nothing_here", json=PERSON)

    assert response.status_code == 404
    assert response.json()["code"] == "capture_form_not_found"


async def test_a_filled_in_honeypot_answers_202_and_stores_nothing(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    form = await make_form(client, h)
    before = await count(db, LeadEvent)

    response = await submit(client, form, data={**PERSON, "website": "http://spam.example"})

    assert response.status_code == 202
    assert response.json() == {"status": "received"}
    assert await leads_of(db) == []
    assert await count(db, LeadEvent) == before


async def test_a_resubmission_appends_a_note_to_the_lead_on_file_instead_of_a_new_lead(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    form = await make_form(client, h, name="Pricing")
    await submit(client, form, json=PERSON)
    [first] = await leads_of(db)
    first_id, first_version = first.id, first.version

    again = await submit(
        client, form, json={**PERSON, "email": "JANE@acme.com", "message": "Still interested"}
    )

    assert again.status_code == 202
    assert again.json() == {"status": "received"}
    [lead] = await leads_of(db)
    assert lead.id == first_id
    assert lead.version == first_version + 1
    assert "Re-submitted via form Pricing: Still interested" in lead.notes
    events = list(
        await db.scalars(
            select(LeadEvent).where(LeadEvent.lead_id == lead.id).order_by(LeadEvent.id)
        )
    )
    assert [e.type for e in events] == ["lead.created", "lead.note_added"]
    assert events[-1].note == "Re-submitted via form Pricing: Still interested"


async def test_a_resubmission_matches_the_phone_too(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    form = await make_form(client, h)
    await submit(
        client, form, json={"first_name": "Jo", "last_name": "Ng", "phone": "+1 555 010 2030"}
    )

    await submit(
        client, form, data={"first_name": "Jo", "last_name": "Ng", "phone": "+15550102030"}
    )

    [lead] = await leads_of(db)
    assert "Re-submitted via form Contact us" in lead.notes


async def test_a_captured_lead_is_assigned_by_the_forms_rule(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, agent: User, other_agent: User
) -> None:
    rule = await client.post(
        "/api/v1/assignment-rules",
        json={"name": "Web", "strategy": "round_robin", "agent_ids": [agent.id, other_agent.id]},
        headers=h,
    )
    form = await make_form(client, h, assignment_rule_id=rule.json()["id"])

    for n in range(3):
        await submit(client, form, json={**PERSON, "email": f"p{n}@acme.com"})

    assert [lead.assigned_to for lead in await leads_of(db)] == [agent.id, other_agent.id, agent.id]


async def test_without_a_rule_a_captured_lead_is_unassigned(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession
) -> None:
    form = await make_form(client, h)

    await submit(client, form, json=PERSON)

    assert [lead.assigned_to for lead in await leads_of(db)] == [None]


# --- the rate limit ------------------------------------------------------------------------------


async def test_past_the_rate_limit_a_sender_gets_429_with_retry_after_and_nothing_is_stored(
    client: httpx.AsyncClient, h: dict[str, str], db: AsyncSession, settings: Settings
) -> None:
    form = await make_form(client, h)
    limit = settings.capture_rate_per_minute
    wait_for_a_fresh_minute()

    answers = [
        await submit(client, form, json={**PERSON, "email": f"p{n}@acme.com"})
        for n in range(limit + 2)
    ]

    assert limit == 10  # the default, as the issue asks
    assert [a.status_code for a in answers] == [202] * limit + [429, 429]
    assert answers[limit].json()["code"] == "too_many_submissions"
    assert 1 <= int(answers[limit].headers["Retry-After"]) <= 60
    assert len(await leads_of(db)) == limit


async def test_the_rate_limit_is_per_form(
    client: httpx.AsyncClient, h: dict[str, str], settings: Settings
) -> None:
    first, second = await make_form(client, h), await make_form(client, h, name="Other")
    wait_for_a_fresh_minute()

    for n in range(settings.capture_rate_per_minute):
        await submit(client, first, json={**PERSON, "email": f"p{n}@acme.com"})
    other = await submit(client, second, json=PERSON)

    assert other.status_code == 202


async def test_honeypot_posts_count_toward_the_rate_limit(
    client: httpx.AsyncClient, h: dict[str, str], settings: Settings
) -> None:
    form = await make_form(client, h)
    wait_for_a_fresh_minute()

    for _ in range(settings.capture_rate_per_minute):
        await submit(client, form, data={**PERSON, "website": "spam"})
    real = await submit(client, form, json=PERSON)

    assert real.status_code == 429


# --- CORS ---------------------------------------------------------------------------------------


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }


async def test_a_preflight_from_an_allowed_origin_is_allowed_exactly_for_it(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    form = await make_form(client, h)

    response = await client.options(f"{CAPTURE}/{form['public_key']}", headers=preflight(SITE))

    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == SITE
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "content-type" in response.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in response.headers


async def test_a_preflight_from_another_origin_gets_no_cors_headers(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    form = await make_form(client, h)

    for origin in ("https://evil.example.net", "https://example.com", f"{SITE}:8443"):
        response = await client.options(
            f"{CAPTURE}/{form['public_key']}", headers=preflight(origin)
        )
        assert not [k for k in response.headers if k.startswith("access-control-")], origin


async def test_a_post_from_an_allowed_origin_may_be_read_by_the_page_errors_included(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    form = await make_form(client, h)

    accepted = await submit(client, form, json=PERSON, headers={"Origin": SITE})
    refused = await submit(client, form, json={"first_name": "J"}, headers={"Origin": SITE})

    assert accepted.headers["access-control-allow-origin"] == SITE
    assert refused.status_code == 422
    assert refused.headers["access-control-allow-origin"] == SITE
    assert "origin" in accepted.headers["vary"].lower()


async def test_a_post_from_another_origin_carries_no_cors_header(
    client: httpx.AsyncClient, h: dict[str, str]
) -> None:
    form = await make_form(client, h)

    response = await submit(
        client, form, json=PERSON, headers={"Origin": "https://evil.example.net"}
    )

    assert "access-control-allow-origin" not in response.headers


@pytest.fixture
async def api_cors_client(
    engine: AsyncEngine, db: AsyncSession
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with CORS_ORIGINS set for the frontend: capture forms keep their own."""
    with use_settings(make_settings(cors_origins="http://localhost:5173")):
        async with client_of(app_in_session(engine, db)) as client:
            yield client


async def test_the_apis_own_cors_origins_do_not_apply_to_capture_forms(
    api_cors_client: httpx.AsyncClient, superuser: User, auth_headers: object
) -> None:
    h = auth_headers(superuser)  # type: ignore[operator]
    form = await make_form(api_cors_client, h)
    key = form["public_key"]

    frontend = await api_cors_client.options(
        f"{CAPTURE}/{key}", headers=preflight("http://localhost:5173")
    )
    site = await api_cors_client.options(f"{CAPTURE}/{key}", headers=preflight(SITE))
    api = await api_cors_client.options("/api/v1/leads", headers=preflight("http://localhost:5173"))

    assert "access-control-allow-origin" not in frontend.headers
    assert site.headers["access-control-allow-origin"] == SITE
    assert api.headers["access-control-allow-origin"] == "http://localhost:5173"


# --- who may post ------------------------------------------------------------------------------


async def test_anyone_may_post_and_a_token_sent_along_grants_nothing(
    client: httpx.AsyncClient,
    h: dict[str, str],
    db: AsyncSession,
    agent: User,
    inactive_user: User,
    superuser: User,
    auth_headers: Callable[[User], dict[str, str]],
) -> None:
    """The capture endpoint takes no login: anonymous callers, and callers who send any token
    (an agent's, an inactive user's, a superuser's), all post the same way; no lead is theirs."""
    form = await make_form(client, h)
    callers = {
        "anonymous": {},
        "agent": auth_headers(agent),
        "inactive": auth_headers(inactive_user),
        "superuser": auth_headers(superuser),
        "forged": {"Authorization": "Bearer not-a-token"},
    }

    answers = {
        who: await submit(
            client, form, json={**PERSON, "email": f"{who}@acme.com"}, headers=headers
        )
        for who, headers in callers.items()
    }

    assert {who: a.status_code for who, a in answers.items()} == dict.fromkeys(callers, 202)
    leads = await leads_of(db)
    assert [(lead.assigned_to, lead.created_by) for lead in leads] == [(None, None)] * len(callers)
