"""operations get an end_seq the database numbers as each one ends, the feed of outcomes the Dagster UI shows

Operations end out of creation order, so `seq` cannot say which endings a reader has seen. A trigger takes
the next value of `operations_end_seq` when an operation becomes done (whichever code path ends it); the
Dagster operations sensor reads the endings in that order, with the same cursor and awaited gaps as the
executions it reports. `ix_operations_ended` serves the health check on the last hour's outcomes (a done
operation's `update_time` is when it ended: finished operations never change again).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("operations", sa.Column("end_seq", sa.BigInteger(), nullable=True))
    op.create_unique_constraint(op.f("uq_operations_end_seq"), "operations", ["end_seq"])
    op.create_index(
        "ix_operations_ended", "operations", ["update_time"], unique=False, postgresql_where=sa.text("done")
    )
    # Owned by the column: TRUNCATE ... RESTART IDENTITY restarts it with the table, and it goes with it.
    op.execute("CREATE SEQUENCE operations_end_seq OWNED BY operations.end_seq")
    # Operations that ended before this revision are numbered in the order they ended.
    op.execute(
        """
        UPDATE operations o SET end_seq = n.rn
        FROM (SELECT id, row_number() OVER (ORDER BY update_time, seq) AS rn FROM operations WHERE done) n
        WHERE o.id = n.id
        """
    )
    op.execute(
        "SELECT setval('operations_end_seq', coalesce((SELECT max(end_seq) FROM operations), 0) + 1, false)"
    )
    op.execute(
        """
        CREATE FUNCTION operations_number_ending() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.done AND NEW.end_seq IS NULL THEN
                NEW.end_seq := nextval('operations_end_seq');
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER operations_number_ending BEFORE INSERT OR UPDATE OF done ON operations
        FOR EACH ROW EXECUTE FUNCTION operations_number_ending()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER operations_number_ending ON operations")
    op.execute("DROP FUNCTION operations_number_ending()")
    op.drop_index("ix_operations_ended", table_name="operations", postgresql_where=sa.text("done"))
    op.drop_constraint(op.f("uq_operations_end_seq"), "operations", type_="unique")
    # Dropping the column drops the sequence it owns.
    op.drop_column("operations", "end_seq")
