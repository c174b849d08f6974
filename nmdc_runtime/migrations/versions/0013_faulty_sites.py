"""a faulty site cannot hurt the federation: site_endings (drained sites), operations.execution_count

Each ending of an operation is judged by `operation_ending_kind` (the SQL form of
`nmdc_runtime.domain.drains.ending_kind`): a fault of the executing site, a success, or neither. The trigger
`operations_note_site_ending` appends the faults and successes to `site_endings` (`fault` true or false) as
operations become done,
whichever code ends them, so a site's streak of faults (what drains it) is right on every path; rows are only
appended (and pruned by the reaper), so endings never queue behind each other on a row of their site.
`site_fault_streak` reads a site's streak (the SQL form of `domain.drains.fault_streak`).

`operations.execution_count` counts the executions recorded under each operation, for their cap.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "operations", sa.Column("execution_count", sa.Integer(), server_default="0", nullable=False)
    )
    op.execute(
        """
        UPDATE operations o SET execution_count = e.n
        FROM (SELECT operation_id, count(*) AS n FROM executions GROUP BY operation_id) e
        WHERE o.id = e.operation_id
        """
    )
    op.create_table(
        "site_endings",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("site_id", sa.Text(), nullable=False),
        sa.Column("fault", sa.Boolean(), nullable=False),
        sa.Column("operation_id", sa.Text(), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_site_endings")),
    )
    op.create_index(op.f("ix_site_endings_site_id_seq"), "site_endings", ["site_id", "seq"])
    op.create_index(
        "ix_site_endings_resets",
        "site_endings",
        ["site_id", "seq"],
        postgresql_where=sa.text("NOT fault"),
    )
    # The SQL form of `domain.drains.ending_kind` (tests/integration/test_rules_agree.py): 'fault', 'success',
    # or NULL for an ending that neither counts nor resets. `#>>` on a `details` that is not an object is NULL.
    op.execute(
        """
        CREATE FUNCTION operation_ending_kind(state text, cancel_requested boolean, error jsonb)
        RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE
                WHEN cancel_requested THEN NULL
                WHEN state = 'succeeded' THEN 'success'
                WHEN state = 'expired' THEN 'fault'
                WHEN state = 'failed' THEN
                    CASE WHEN error ->> 'code' IN ('DATA_LOSS', 'UNAVAILABLE') THEN NULL ELSE 'fault' END
                WHEN state = 'canceled' AND error #>> '{details,reason,code}' = 'SITE_FAULT' THEN 'fault'
            END
        $$
        """
    )
    # The SQL form of `domain.drains.fault_streak`, its first `n` faults: the site's rows after its last success
    # or undrain, all faults, as a JSON list of [operation id, ended at] (NULL when there are none). A function
    # of PL/pgSQL, whose statements are planned once per connection: the claim reads it in its first statement,
    # and planning these subqueries afresh with each claim cost that statement as much again as the rest.
    op.execute(
        """
        CREATE FUNCTION site_fault_streak(site text, n integer) RETURNS jsonb
        LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
        BEGIN
            RETURN (
                SELECT jsonb_agg(jsonb_build_array(streak.operation_id, streak.ended_at) ORDER BY streak.seq)
                FROM (
                    SELECT e.seq, e.operation_id, e.ended_at
                    FROM site_endings e
                    WHERE e.site_id = site
                      AND e.seq > coalesce(
                          (SELECT max(r.seq) FROM site_endings r WHERE r.site_id = site AND NOT r.fault), 0
                      )
                    ORDER BY e.seq
                    LIMIT n
                ) streak
            );
        END
        $$
        """
    )
    # Operations are inserted open and end by an UPDATE of `done` (every path: the holder's PATCH, fast or
    # not, a lapse wherever it is noticed, the reaper, a release, a cancel), once: finished ones never change.
    op.execute(
        """
        CREATE FUNCTION operations_note_site_ending() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            kind text := operation_ending_kind(NEW.state, NEW.cancel_requested, NEW.error);
        BEGIN
            IF kind IS NOT NULL THEN
                INSERT INTO site_endings (site_id, fault, operation_id, ended_at)
                VALUES (NEW.site_id, kind = 'fault', NEW.id, NEW.update_time);
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER operations_note_site_ending AFTER UPDATE OF done ON operations
        FOR EACH ROW WHEN (NEW.done AND NOT OLD.done) EXECUTE FUNCTION operations_note_site_ending()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER operations_note_site_ending ON operations")
    op.execute("DROP FUNCTION operations_note_site_ending()")
    op.execute("DROP FUNCTION site_fault_streak(text, integer)")
    op.execute("DROP FUNCTION operation_ending_kind(text, boolean, jsonb)")
    op.drop_index("ix_site_endings_resets", table_name="site_endings", postgresql_where=sa.text("NOT fault"))
    op.drop_index(op.f("ix_site_endings_site_id_seq"), table_name="site_endings")
    op.drop_table("site_endings")
    op.drop_column("operations", "execution_count")
