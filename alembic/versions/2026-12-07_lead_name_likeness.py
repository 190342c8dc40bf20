"""Name likeness for duplicate candidates: `crm_name_key`, its indexes, `lead_name_keys`

`GET /leads/{id}/duplicates` ranks live leads by how alike their first name, last name and
company are to the lead's (app/models/name_likeness.py): on PostgreSQL pg_trgm's `similarity`
over `crm_name_key(...)`, the three lowercased and unaccented. An index expression must be
immutable, and `unaccent(text)` is only stable (it looks its dictionary up by the search
path), so `crm_name_key` calls it with the dictionary named, and is declared immutable.

The trigram search does not run over the leads but over `lead_name_keys`, every name key a
lead has had, once each (a trigger adds a lead's key when it is inserted or renamed; keys are
never removed, so one may have no live lead left). Many leads share a name: over the leads, a
common one's trigrams have posting lists of tens of thousands of rows, merged and rechecked on
every search (200-500 ms at a million leads); over the distinct keys the same search reads a
few hundred. The leads of each alike key are then found through a B-tree index on the key
(with `id`, or `assigned_to` and `id` for an agent's own), 20 at most per key. The planner has
no statistics on an expression it has not seen, and guessed 5,000 leads per key, which made it
walk the primary key instead: an expression statistics object gives it the real figure.

SQLite gets the two functions from Python on every connection (app/database.py), and none of
this: it compares the lead with every live one. The downgrade drops what it made and leaves
the extensions, which other schemas in the database may use.

Revision ID: b7e2f0c4d913
Revises: a1d7c3e9f052
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "b7e2f0c4d913"
down_revision = "a1d7c3e9f052"
branch_labels = None
depends_on = None

KEY = "crm_name_key(first_name, last_name, company)"
NAME_KEY = """
CREATE FUNCTION crm_name_key(first_name text, last_name text, company text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT lower(public.unaccent('public.unaccent'::regdictionary,
        coalesce(first_name, '') || ' ' || coalesce(last_name, '') || ' ' || coalesce(company, '')))
$$
"""
# Statement-level on INSERT (one per statement, however many rows: an import, the seed's
# COPY); row-level on UPDATE, since a transition table cannot go with a column list, and only
# when a name changed, so that a bulk status change costs nothing here.
ADD_KEYS = """
CREATE FUNCTION crm_add_name_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'STATEMENT' THEN
        INSERT INTO lead_name_keys (key)
        SELECT DISTINCT crm_name_key(first_name, last_name, company) FROM new_leads
        ON CONFLICT DO NOTHING;
    ELSE
        INSERT INTO lead_name_keys (key)
        VALUES (crm_name_key(NEW.first_name, NEW.last_name, NEW.company))
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$
"""
TRIGGERS = (
    "CREATE TRIGGER leads_name_keys_insert AFTER INSERT ON leads "
    "REFERENCING NEW TABLE AS new_leads FOR EACH STATEMENT EXECUTE FUNCTION crm_add_name_keys()",
    "CREATE TRIGGER leads_name_keys_update AFTER UPDATE OF first_name, last_name, company "
    "ON leads FOR EACH ROW WHEN (OLD.first_name IS DISTINCT FROM NEW.first_name "
    "OR OLD.last_name IS DISTINCT FROM NEW.last_name OR OLD.company IS DISTINCT FROM "
    "NEW.company) EXECUTE FUNCTION crm_add_name_keys()",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE EXTENSION IF NOT EXISTS unaccent SCHEMA public")
    op.execute(NAME_KEY)
    op.execute("CREATE TABLE lead_name_keys (key text CONSTRAINT pk_lead_name_keys PRIMARY KEY)")
    op.execute(f"INSERT INTO lead_name_keys (key) SELECT DISTINCT {KEY} FROM leads")
    op.execute("CREATE INDEX ix_lead_name_keys_trgm ON lead_name_keys USING gin (key gin_trgm_ops)")
    # The planner guesses how many keys `%` matches from a sample of the column's histogram;
    # from the default 100 entries it guessed 12% where 1% matched, and read all of them.
    op.execute("ALTER TABLE lead_name_keys ALTER COLUMN key SET STATISTICS 1000")
    op.execute(ADD_KEYS)
    for trigger in TRIGGERS:
        op.execute(trigger)
    op.execute(f"CREATE INDEX ix_leads_name_key ON leads ({KEY}, id) WHERE archived_at IS NULL")
    op.execute(
        f"CREATE INDEX ix_leads_owner_name_key ON leads ({KEY}, assigned_to, id) "
        "WHERE archived_at IS NULL"
    )
    op.execute(f"CREATE STATISTICS st_leads_name_key ON ({KEY}) FROM leads")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP STATISTICS IF EXISTS st_leads_name_key")
    op.execute("DROP INDEX IF EXISTS ix_leads_owner_name_key")
    op.execute("DROP INDEX IF EXISTS ix_leads_name_key")
    op.execute("DROP TRIGGER IF EXISTS leads_name_keys_update ON leads")
    op.execute("DROP TRIGGER IF EXISTS leads_name_keys_insert ON leads")
    op.execute("DROP FUNCTION IF EXISTS crm_add_name_keys()")
    op.execute("DROP TABLE IF EXISTS lead_name_keys")
    op.execute("DROP FUNCTION IF EXISTS crm_name_key(text, text, text)")
