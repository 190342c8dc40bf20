"""Maintained aggregates for pipeline statistics: the lead_stats table and its triggers

`GET /leads/statistics` counted every live lead per request (a GROUP BY over the covering index
ix_leads_statistics, ~300 ms at a million leads). Now a small table holds, per (assignee, status,
source), the number of live (not archived) leads, the sum of their scores and the number of hot
ones, and triggers on `leads` keep it up to date on every write, whatever path it takes (ORM,
bulk UPDATE, hard delete, archive/restore, COPY, raw SQL). Unassigned leads use assignee_id 0.

- PostgreSQL: one plpgsql function behind statement-level AFTER INSERT / UPDATE / DELETE
  triggers with transition tables. Each statement's changes are netted per key (keys with a zero
  delta are skipped, so a note or a call attempt locks nothing) and applied by one
  `INSERT ... ON CONFLICT DO UPDATE` in key order. An AFTER TRUNCATE trigger empties the table.
- SQLite: row-level triggers with upserts; the UPDATE trigger fires only when assigned_to,
  status, source, lead_score or archived_at really changed.

The triggers are created before the backfill: on PostgreSQL CREATE TRIGGER locks `leads` against
writes until this migration commits, so no write can fall between the backfill's snapshot and
the triggers. The SQL is a frozen copy of app/models/lead_stats.py at the time of writing (a
revision must build the same schema forever); tests check that both build identical triggers.
The downgrade drops the triggers, the function and the table.

Revision ID: 292052fa9c56
Revises: 8e41b7c2d903
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "292052fa9c56"
down_revision = "8e41b7c2d903"
branch_labels = None
depends_on = None

HOT_LEAD = "lead_score >= 80 AND status NOT IN ('WON', 'LOST')"

POSTGRES_FUNCTION = """CREATE OR REPLACE FUNCTION lead_stats_apply_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO lead_stats AS s
            (assignee_id, status, source, lead_count, score_sum, hot_count)
        SELECT d.assignee_id, d.status, d.source, sum(d.n), sum(d.score), sum(d.hot)
        FROM (
            SELECT coalesce(assigned_to, 0) AS assignee_id, status, source,
                   count(*) AS n, sum(lead_score) AS score,
                   count(*) FILTER (WHERE lead_score >= 80 AND status NOT IN ('WON', 'LOST')) AS hot
            FROM new_leads WHERE archived_at IS NULL
            GROUP BY 1, 2, 3
        ) AS d
        GROUP BY d.assignee_id, d.status, d.source
        HAVING sum(d.n) <> 0 OR sum(d.score) <> 0 OR sum(d.hot) <> 0
        ORDER BY d.assignee_id, d.status, d.source
        ON CONFLICT (assignee_id, status, source) DO UPDATE SET
            lead_count = s.lead_count + excluded.lead_count,
            score_sum = s.score_sum + excluded.score_sum,
            hot_count = s.hot_count + excluded.hot_count;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO lead_stats AS s
            (assignee_id, status, source, lead_count, score_sum, hot_count)
        SELECT d.assignee_id, d.status, d.source, sum(d.n), sum(d.score), sum(d.hot)
        FROM (
            SELECT coalesce(assigned_to, 0) AS assignee_id, status, source,
                   count(*) AS n, sum(lead_score) AS score,
                   count(*) FILTER (WHERE lead_score >= 80 AND status NOT IN ('WON', 'LOST')) AS hot
            FROM new_leads WHERE archived_at IS NULL
            GROUP BY 1, 2, 3 UNION ALL
            SELECT coalesce(assigned_to, 0) AS assignee_id, status, source,
                   -count(*) AS n, -sum(lead_score) AS score,
                   -count(*) FILTER (WHERE lead_score >= 80 AND status NOT IN ('WON', 'LOST')) AS hot
            FROM old_leads WHERE archived_at IS NULL
            GROUP BY 1, 2, 3
        ) AS d
        GROUP BY d.assignee_id, d.status, d.source
        HAVING sum(d.n) <> 0 OR sum(d.score) <> 0 OR sum(d.hot) <> 0
        ORDER BY d.assignee_id, d.status, d.source
        ON CONFLICT (assignee_id, status, source) DO UPDATE SET
            lead_count = s.lead_count + excluded.lead_count,
            score_sum = s.score_sum + excluded.score_sum,
            hot_count = s.hot_count + excluded.hot_count;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO lead_stats AS s
            (assignee_id, status, source, lead_count, score_sum, hot_count)
        SELECT d.assignee_id, d.status, d.source, sum(d.n), sum(d.score), sum(d.hot)
        FROM (
            SELECT coalesce(assigned_to, 0) AS assignee_id, status, source,
                   -count(*) AS n, -sum(lead_score) AS score,
                   -count(*) FILTER (WHERE lead_score >= 80 AND status NOT IN ('WON', 'LOST')) AS hot
            FROM old_leads WHERE archived_at IS NULL
            GROUP BY 1, 2, 3
        ) AS d
        GROUP BY d.assignee_id, d.status, d.source
        HAVING sum(d.n) <> 0 OR sum(d.score) <> 0 OR sum(d.hot) <> 0
        ORDER BY d.assignee_id, d.status, d.source
        ON CONFLICT (assignee_id, status, source) DO UPDATE SET
            lead_count = s.lead_count + excluded.lead_count,
            score_sum = s.score_sum + excluded.score_sum,
            hot_count = s.hot_count + excluded.hot_count;
    ELSIF TG_OP = 'TRUNCATE' THEN
        DELETE FROM lead_stats;
    END IF;
    RETURN NULL;
END
$$"""

POSTGRES_TRIGGERS = (
    "CREATE TRIGGER lead_stats_after_insert AFTER INSERT ON leads REFERENCING NEW TABLE AS new_leads FOR EACH STATEMENT EXECUTE FUNCTION lead_stats_apply_changes()",
    "CREATE TRIGGER lead_stats_after_update AFTER UPDATE ON leads REFERENCING OLD TABLE AS old_leads NEW TABLE AS new_leads FOR EACH STATEMENT EXECUTE FUNCTION lead_stats_apply_changes()",
    "CREATE TRIGGER lead_stats_after_delete AFTER DELETE ON leads REFERENCING OLD TABLE AS old_leads FOR EACH STATEMENT EXECUTE FUNCTION lead_stats_apply_changes()",
    "CREATE TRIGGER lead_stats_after_truncate AFTER TRUNCATE ON leads FOR EACH STATEMENT EXECUTE FUNCTION lead_stats_apply_changes()",
)

SQLITE_TRIGGERS = (
    """CREATE TRIGGER lead_stats_after_insert AFTER INSERT ON leads
FOR EACH ROW BEGIN
    INSERT INTO lead_stats (assignee_id, status, source, lead_count, score_sum, hot_count)
    SELECT coalesce(NEW.assigned_to, 0), NEW.status, NEW.source, 1,
           NEW.lead_score, (CASE WHEN NEW.lead_score >= 80 AND NEW.status NOT IN ('WON', 'LOST') THEN 1 ELSE 0 END)
    WHERE NEW.archived_at IS NULL
    ON CONFLICT (assignee_id, status, source) DO UPDATE SET
        lead_count = lead_count + excluded.lead_count,
        score_sum = score_sum + excluded.score_sum,
        hot_count = hot_count + excluded.hot_count;
END""",
    """CREATE TRIGGER lead_stats_after_update
AFTER UPDATE OF assigned_to, status, source, lead_score, archived_at ON leads
FOR EACH ROW WHEN OLD.assigned_to IS NOT NEW.assigned_to
    OR OLD.status IS NOT NEW.status
    OR OLD.source IS NOT NEW.source
    OR OLD.lead_score IS NOT NEW.lead_score
    OR (OLD.archived_at IS NULL) <> (NEW.archived_at IS NULL)
BEGIN
    INSERT INTO lead_stats (assignee_id, status, source, lead_count, score_sum, hot_count)
    SELECT coalesce(OLD.assigned_to, 0), OLD.status, OLD.source, -1,
           -OLD.lead_score, -(CASE WHEN OLD.lead_score >= 80 AND OLD.status NOT IN ('WON', 'LOST') THEN 1 ELSE 0 END)
    WHERE OLD.archived_at IS NULL
    ON CONFLICT (assignee_id, status, source) DO UPDATE SET
        lead_count = lead_count + excluded.lead_count,
        score_sum = score_sum + excluded.score_sum,
        hot_count = hot_count + excluded.hot_count;
    INSERT INTO lead_stats (assignee_id, status, source, lead_count, score_sum, hot_count)
    SELECT coalesce(NEW.assigned_to, 0), NEW.status, NEW.source, 1,
           NEW.lead_score, (CASE WHEN NEW.lead_score >= 80 AND NEW.status NOT IN ('WON', 'LOST') THEN 1 ELSE 0 END)
    WHERE NEW.archived_at IS NULL
    ON CONFLICT (assignee_id, status, source) DO UPDATE SET
        lead_count = lead_count + excluded.lead_count,
        score_sum = score_sum + excluded.score_sum,
        hot_count = hot_count + excluded.hot_count;
END""",
    """CREATE TRIGGER lead_stats_after_delete AFTER DELETE ON leads
FOR EACH ROW BEGIN
    INSERT INTO lead_stats (assignee_id, status, source, lead_count, score_sum, hot_count)
    SELECT coalesce(OLD.assigned_to, 0), OLD.status, OLD.source, -1,
           -OLD.lead_score, -(CASE WHEN OLD.lead_score >= 80 AND OLD.status NOT IN ('WON', 'LOST') THEN 1 ELSE 0 END)
    WHERE OLD.archived_at IS NULL
    ON CONFLICT (assignee_id, status, source) DO UPDATE SET
        lead_count = lead_count + excluded.lead_count,
        score_sum = score_sum + excluded.score_sum,
        hot_count = hot_count + excluded.hot_count;
END""",
)

BACKFILL = f"""INSERT INTO lead_stats (assignee_id, status, source, lead_count, score_sum, hot_count)
SELECT coalesce(assigned_to, 0), status, source, count(*), sum(lead_score),
       sum(CASE WHEN {HOT_LEAD} THEN 1 ELSE 0 END)
FROM leads
WHERE archived_at IS NULL
GROUP BY coalesce(assigned_to, 0), status, source"""


def upgrade() -> None:
    op.create_table(
        "lead_stats",
        sa.Column("assignee_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("lead_count", sa.Integer(), nullable=False),
        sa.Column("score_sum", sa.BigInteger(), nullable=False),
        sa.Column("hot_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("assignee_id", "status", "source", name=op.f("pk_lead_stats")),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        for statement in POSTGRES_TRIGGERS:
            op.execute(statement)
    elif dialect == "sqlite":
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
    else:
        raise NotImplementedError(f"lead_stats triggers for {dialect}")
    op.execute(BACKFILL)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for event in ("truncate", "delete", "update", "insert"):
            op.execute(f"DROP TRIGGER IF EXISTS lead_stats_after_{event} ON leads")
        op.execute("DROP FUNCTION IF EXISTS lead_stats_apply_changes()")
    else:
        for event in ("delete", "update", "insert"):
            op.execute(f"DROP TRIGGER IF EXISTS lead_stats_after_{event}")
    op.drop_table("lead_stats")
