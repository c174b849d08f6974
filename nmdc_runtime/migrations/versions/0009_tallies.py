"""tallies of jobs by status and of executions, kept by triggers, so the health figures do not count history

`runtime_status` counted every job by status and every execution each minute (and at each metrics scrape):
a scan of all jobs ever made, which on a few million jobs took cores from the claims. Triggers append each
change to `tally_changes` (a statement's inserts as one row per status, a job's move between statuses as
-1 and +1); the reaper folds them into `tallies`; a reader sums `tallies` and the changes not folded yet.
Appending, never updating a counter row, keeps the claims from waiting on each other.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Each table counted: (table, the tally name made from a row `r`).
_COUNTED = {"jobs": "'jobs.' || r.status", "executions": "'executions'"}


def upgrade() -> None:
    op.create_table(
        "tallies",
        sa.Column("counted", sa.Text(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("counted", name=op.f("pk_tallies")),
    )
    op.create_table(
        "tally_changes",
        sa.Column("counted", sa.Text(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    # Every fold deletes what was appended since the last one (10 s of claims): vacuum it as often.
    op.execute(
        "ALTER TABLE tally_changes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,"
        " autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 5000)"
    )
    # No job or execution is written between the count below and the triggers taking over.
    op.execute("LOCK TABLE jobs, executions IN SHARE MODE")
    for table, name in _COUNTED.items():
        for change, event, sign, rows in (
            ("inserted", "INSERT", "", "NEW TABLE AS new_rows"),
            ("deleted", "DELETE", "-", "OLD TABLE AS old_rows"),
        ):
            transition = rows.split()[-1]
            op.execute(
                f"""
                CREATE FUNCTION {table}_tally_{change}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO tally_changes (counted, n)
                    SELECT {name}, {sign}count(*) FROM {transition} r GROUP BY 1;
                    RETURN NULL;
                END
                $$
                """
            )
            op.execute(
                f"""
                CREATE TRIGGER {table}_tally_{change} AFTER {event} ON {table} REFERENCING {rows}
                FOR EACH STATEMENT EXECUTE FUNCTION {table}_tally_{change}()
                """
            )
        # TRUNCATE fires no row or DELETE trigger: it empties the table's tallies itself.
        op.execute(
            f"""
            CREATE FUNCTION {table}_tally_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                DELETE FROM tally_changes WHERE counted = '{table}' OR counted LIKE '{table}.%';
                DELETE FROM tallies WHERE counted = '{table}' OR counted LIKE '{table}.%';
                RETURN NULL;
            END
            $$
            """
        )
        op.execute(
            f"""
            CREATE TRIGGER {table}_tally_truncated AFTER TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION {table}_tally_truncated()
            """
        )
        op.execute(f"INSERT INTO tallies (counted, n) SELECT {name}, count(*) FROM {table} r GROUP BY 1")
    # A claim, a lease's end, a finish: one job at a time, so a row trigger, and only when the status moved.
    op.execute(
        """
        CREATE FUNCTION jobs_tally_moved() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO tally_changes (counted, n) VALUES ('jobs.' || OLD.status, -1), ('jobs.' || NEW.status, 1);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER jobs_tally_moved AFTER UPDATE OF status ON jobs
        FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION jobs_tally_moved()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_tally_moved ON jobs")
    op.execute("DROP FUNCTION jobs_tally_moved()")
    for table in _COUNTED:
        for change in ("inserted", "deleted", "truncated"):
            op.execute(f"DROP TRIGGER {table}_tally_{change} ON {table}")
            op.execute(f"DROP FUNCTION {table}_tally_{change}()")
    op.drop_table("tally_changes")
    op.drop_table("tallies")
