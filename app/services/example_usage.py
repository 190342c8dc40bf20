"""A guided tour of LeadService, top to bottom, against a throw-away SQLite file.

    python -m app.services.example_usage

It migrates a fresh database with Alembic, makes a manager and two agents, and then calls every
public LeadService method, printing what each one did. Nothing outside a temporary folder is
touched.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from app.database import create_engine, create_session_factory, upgrade_database
from app.models import LeadSource, LeadStatus, User
from app.services import LeadService
from app.services.exceptions import CRMException

# A placeholder hash: these demo users never log in.
DEMO_HASH = "$argon2id$v=19$m=65536,t=3,p=4$demo$demo"


def show(title: str, value: object = "") -> None:
    print(f"\n== {title}")
    if value != "":
        print(value)


async def main(database_file: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{database_file}")
    await upgrade_database(engine)
    sessions = create_session_factory(engine)

    async with sessions() as db:
        manager = User(
            email="manager@example.com",
            full_name="Maria Manager",
            hashed_password=DEMO_HASH,
            is_superuser=True,
        )
        alice = User(email="alice@example.com", full_name="Alice Agent", hashed_password=DEMO_HASH)
        bob = User(email="bob@example.com", full_name="Bob Agent", hashed_password=DEMO_HASH)
        db.add_all([manager, alice, bob])
        await db.commit()
        # Keep plain ids: a failed service call rolls back, which expires every loaded object.
        manager_id, alice_id, bob_id = manager.id, alice.id, bob.id
        show("Users", f"manager={manager_id}, alice={alice_id}, bob={bob_id}")

        # create_lead: scored automatically from source, company, email domain and tags.
        john = await LeadService.create_lead(
            db,
            {
                "first_name": "John",
                "last_name": "Doe",
                "email": "john@acme-industries.com",
                "phone": "+1 (234) 567-890",
                "company": "Acme Industries",
                "source": LeadSource.REFERRAL,
                "tags": ["Enterprise", "q4"],
            },
            user_id=alice_id,
        )
        show(
            "create_lead (agent's lead is assigned to the agent)",
            f"id={john.id} score={john.lead_score} phone={john.phone} tags={john.tags} "
            f"assignee={john.assignee.email if john.assignee else None}",
        )
        jane = await LeadService.create_lead(
            db,
            {"first_name": "Jane", "last_name": "Roe", "email": "jane@gmail.com"},
            user_id=manager_id,
        )
        show("create_lead (free-mail, no company)", f"id={jane.id} score={jane.lead_score}")
        john_id, jane_id = john.id, jane.id
        extra = [
            await LeadService.create_lead(
                db,
                {"first_name": f"Lead{i}", "last_name": "Sample", "phone": f"+4420700{i:05d}"},
                user_id=bob_id,
            )
            for i in range(3)
        ]
        extra_ids = [lead.id for lead in extra]

        # update_lead: every changed field is written to the notes in one line.
        john = await LeadService.update_lead(
            db,
            john_id,
            {"status": LeadStatus.CONTACTED, "notes": "Asked for a demo next week."},
            user_id=alice_id,
        )
        show("update_lead -> notes", john.notes)

        # get_lead_by_id with an assignment check: Bob may not read Alice's lead.
        try:
            await LeadService.get_lead_by_id(db, john_id, user_id=bob_id, check_assignment=True)
        except CRMException as exc:
            show("get_lead_by_id refused", f"{type(exc).__name__}: {exc}")

        # get_leads: filters, search, sorting, paging; agents see only their own leads.
        leads, total = await LeadService.get_leads(
            db, search="acme", lead_score_min=70, sort_by="lead_score", sort_order="desc"
        )
        show(
            "get_leads(search='acme', lead_score_min=70)",
            [(lead.id, lead.full_name) for lead in leads],
        )
        _, bobs_total = await LeadService.get_leads(db, user_id=bob_id)
        show("get_leads as Bob", f"total={total} for the manager's search; Bob sees {bobs_total}")

        # Notes and call attempts.
        await LeadService.add_lead_note(db, jane_id, "Prefers email.", user_id=manager_id)
        jane = await LeadService.record_call_attempt(db, jane_id, manager_id, note="Voicemail")
        show("record_call_attempt", f"call_attempts={jane.call_attempts}\n{jane.notes}")

        # Bulk operations: all or nothing, one UPDATE whatever the number of ids.
        moved = await LeadService.bulk_update_status(
            db, extra_ids, LeadStatus.QUALIFIED, user_id=bob_id
        )
        show("bulk_update_status", [(lead.id, lead.status.value) for lead in moved])
        assigned = await LeadService.assign_leads(
            db, [jane_id, *extra_ids], agent_user_id=alice_id, assigned_by_user_id=manager_id
        )
        show(
            "assign_leads -> last note of each", [lead.notes.splitlines()[-1] for lead in assigned]
        )
        try:
            await LeadService.bulk_update_status(db, [jane_id, 999_999], "WON", user_id=manager_id)
        except CRMException as exc:
            show("bulk_update_status with a missing id changes nothing", str(exc))

        # Soft delete, restore, hard delete.
        archived = await LeadService.delete_lead(db, john_id, user_id=alice_id)
        show("delete_lead (soft)", f"status={archived.status.value} tags={archived.tags}")
        restored = await LeadService.restore_lead(db, john_id, user_id=alice_id)
        show("restore_lead", f"status={restored.status.value} tags={restored.tags}")
        await LeadService.delete_lead(db, extra_ids[0], user_id=manager_id, hard_delete=True)
        show("delete_lead (hard, superuser)", f"lead {extra_ids[0]} is gone")

        show("get_lead_statistics", await LeadService.get_lead_statistics(db))
        show(
            "get_lead_statistics for Bob", await LeadService.get_lead_statistics(db, user_id=bob_id)
        )

    await engine.dispose()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(main(Path(folder) / "example.db"))
