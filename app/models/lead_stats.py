"""`LeadStats`: pipeline figures per (assignee, status, source), kept up to date by triggers.

`GET /leads/statistics` must not count a million leads per request. Instead this small table
holds, for the live (not archived) leads of each key, how many there are, the sum of their
scores and how many are hot; the statistics read a few rows of it.

The database maintains it, not Python: triggers on `leads` apply every change, so every write
path (ORM, bulk UPDATE, hard delete, archive/restore, COPY, raw SQL) keeps it right.

- PostgreSQL: statement-level AFTER INSERT / UPDATE / DELETE triggers with transition tables.
  Each statement's rows are netted per key into one delta, keys whose delta is zero (a note, a
  call) are skipped, and the rest is applied by one `INSERT ... ON CONFLICT DO UPDATE` in key
  order: a statement locks each counter row once, always in the same order, so writers to
  different keys never wait for each other and writers to the same key queue only briefly.
  TRUNCATE empties the table.
- SQLite: row-level triggers with upserts (one writer at a time anyway).

Unassigned leads have the key `assignee_id = 0` (no user has id 0), so the key is a plain
primary key on both databases. Rows whose count falls to 0 stay (at most 48 per assignee).

The Alembic migration owns the schema and carries its own frozen copy of the trigger SQL; the
DDL here builds the same triggers when the tests use `create_all`, and a test checks that both
copies build identical triggers. Changing the hot-lead rule or the columns therefore needs a new
migration that replaces the function/triggers and rebuilds the table (see the first one,
`2026-11-25_lead_stats_aggregates.py`). On SQLite a migration that rebuilds `leads` (batch
mode) drops its triggers and must create them again.
"""

from __future__ import annotations

from sqlalchemy import DDL, BigInteger, Integer, String, event
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.lead import CLOSED_STATUSES, HOT_LEAD_MIN_SCORE, Lead

UNASSIGNED = 0  # `assignee_id` of the leads nobody is assigned to


class LeadStats(Base):
    __tablename__ = "lead_stats"

    assignee_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[str] = mapped_column(String(20), primary_key=True)
    source: Mapped[str] = mapped_column(String(20), primary_key=True)
    lead_count: Mapped[int] = mapped_column(Integer)
    score_sum: Mapped[int] = mapped_column(BigInteger)
    hot_count: Mapped[int] = mapped_column(Integer)

    def __repr__(self) -> str:
        return (
            f"<LeadStats assignee={self.assignee_id} {self.status}/{self.source} "
            f"count={self.lead_count} score_sum={self.score_sum} hot={self.hot_count}>"
        )


def hot_lead_sql(row: str = "") -> str:
    """`Lead.is_hot_lead` without its "not archived" part, in SQL over the row alias `row`."""
    closed = ", ".join(f"'{status.value}'" for status in CLOSED_STATUSES)
    return f"{row}lead_score >= {HOT_LEAD_MIN_SCORE} AND {row}status NOT IN ({closed})"


# --- PostgreSQL ----------------------------------------------------------------------------------


def _live_rows(table: str, sign: str) -> str:
    """Per-key count, score sum and hot count of the live rows of a transition table."""
    return f"""
            SELECT coalesce(assigned_to, 0) AS assignee_id, status, source,
                   {sign}count(*) AS n, {sign}sum(lead_score) AS score,
                   {sign}count(*) FILTER (WHERE {hot_lead_sql()}) AS hot
            FROM {table} WHERE archived_at IS NULL
            GROUP BY 1, 2, 3"""


def _apply(deltas: str) -> str:
    """One statement's deltas, netted per key, applied in key order; zero deltas are skipped."""
    return f"""
        INSERT INTO lead_stats AS s
            (assignee_id, status, source, lead_count, score_sum, hot_count)
        SELECT d.assignee_id, d.status, d.source, sum(d.n), sum(d.score), sum(d.hot)
        FROM ({deltas}
        ) AS d
        GROUP BY d.assignee_id, d.status, d.source
        HAVING sum(d.n) <> 0 OR sum(d.score) <> 0 OR sum(d.hot) <> 0
        ORDER BY d.assignee_id, d.status, d.source
        ON CONFLICT (assignee_id, status, source) DO UPDATE SET
            lead_count = s.lead_count + excluded.lead_count,
            score_sum = s.score_sum + excluded.score_sum,
            hot_count = s.hot_count + excluded.hot_count;"""


_NEW_ROWS = _live_rows("new_leads", "")
_OLD_ROWS = _live_rows("old_leads", "-")

# Statement-level: +1 per live row after the statement, -1 per live row before it. A statement
# that changes no key (a note, a call attempt) locks nothing; the others lock each counter row
# they change once, in key order, so two statements never lock two rows in opposite orders.
POSTGRES_FUNCTION = f"""CREATE OR REPLACE FUNCTION lead_stats_apply_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN{_apply(_NEW_ROWS)}
    ELSIF TG_OP = 'UPDATE' THEN{_apply(_NEW_ROWS + " UNION ALL" + _OLD_ROWS)}
    ELSIF TG_OP = 'DELETE' THEN{_apply(_OLD_ROWS)}
    ELSIF TG_OP = 'TRUNCATE' THEN
        DELETE FROM lead_stats;
    END IF;
    RETURN NULL;
END
$$"""

POSTGRES_TRIGGERS = (
    "CREATE TRIGGER lead_stats_after_insert AFTER INSERT ON leads "
    "REFERENCING NEW TABLE AS new_leads "
    "FOR EACH STATEMENT EXECUTE FUNCTION lead_stats_apply_changes()",
    "CREATE TRIGGER lead_stats_after_update AFTER UPDATE ON leads "
    "REFERENCING OLD TABLE AS old_leads NEW TABLE AS new_leads "
    "FOR EACH STATEMENT EXECUTE FUNCTION lead_stats_apply_changes()",
    "CREATE TRIGGER lead_stats_after_delete AFTER DELETE ON leads "
    "REFERENCING OLD TABLE AS old_leads "
    "FOR EACH STATEMENT EXECUTE FUNCTION lead_stats_apply_changes()",
    "CREATE TRIGGER lead_stats_after_truncate AFTER TRUNCATE ON leads "
    "FOR EACH STATEMENT EXECUTE FUNCTION lead_stats_apply_changes()",
)
POSTGRES_DROP = (
    *(
        f"DROP TRIGGER IF EXISTS lead_stats_after_{event} ON leads"
        for event in ("truncate", "delete", "update", "insert")
    ),
    "DROP FUNCTION IF EXISTS lead_stats_apply_changes()",
)

# --- SQLite --------------------------------------------------------------------------------------


def _sqlite_add(row: str, sign: str) -> str:
    """Add (sign "") or take away (sign "-") one live row `row` (NEW or OLD) to its key."""
    return f"""
    INSERT INTO lead_stats (assignee_id, status, source, lead_count, score_sum, hot_count)
    SELECT coalesce({row}.assigned_to, 0), {row}.status, {row}.source, {sign}1,
           {sign}{row}.lead_score, {sign}(CASE WHEN {hot_lead_sql(row + ".")} THEN 1 ELSE 0 END)
    WHERE {row}.archived_at IS NULL
    ON CONFLICT (assignee_id, status, source) DO UPDATE SET
        lead_count = lead_count + excluded.lead_count,
        score_sum = score_sum + excluded.score_sum,
        hot_count = hot_count + excluded.hot_count;"""


# Row-level, with upserts. An UPDATE fires only when a column the figures depend on is set and
# really changed (a note or a call attempt writes nothing here).
SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER lead_stats_after_insert AFTER INSERT ON leads
FOR EACH ROW BEGIN{_sqlite_add("NEW", "")}
END""",
    f"""CREATE TRIGGER lead_stats_after_update
AFTER UPDATE OF assigned_to, status, source, lead_score, archived_at ON leads
FOR EACH ROW WHEN OLD.assigned_to IS NOT NEW.assigned_to
    OR OLD.status IS NOT NEW.status
    OR OLD.source IS NOT NEW.source
    OR OLD.lead_score IS NOT NEW.lead_score
    OR (OLD.archived_at IS NULL) <> (NEW.archived_at IS NULL)
BEGIN{_sqlite_add("OLD", "-")}{_sqlite_add("NEW", "")}
END""",
    f"""CREATE TRIGGER lead_stats_after_delete AFTER DELETE ON leads
FOR EACH ROW BEGIN{_sqlite_add("OLD", "-")}
END""",
)
SQLITE_DROP = tuple(
    f"DROP TRIGGER IF EXISTS lead_stats_after_{event}" for event in ("delete", "update", "insert")
)


# --- create_all / drop_all ----------------------------------------------------------------------

# The triggers live on `leads`, so `lead_stats` is created after it (and dropped before it).
LeadStats.__table__.add_is_dependent_on(Lead.__table__)
for _statement in (POSTGRES_FUNCTION, *POSTGRES_TRIGGERS):
    event.listen(
        LeadStats.__table__, "after_create", DDL(_statement).execute_if(dialect="postgresql")
    )
for _statement in SQLITE_TRIGGERS:
    event.listen(LeadStats.__table__, "after_create", DDL(_statement).execute_if(dialect="sqlite"))
for _statement in POSTGRES_DROP:
    event.listen(
        LeadStats.__table__, "before_drop", DDL(_statement).execute_if(dialect="postgresql")
    )
for _statement in SQLITE_DROP:
    event.listen(LeadStats.__table__, "before_drop", DDL(_statement).execute_if(dialect="sqlite"))
