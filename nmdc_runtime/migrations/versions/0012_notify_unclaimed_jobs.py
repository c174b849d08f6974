"""a notification on channel nmdc_jobs_unclaimed each time jobs become unclaimed, for the sites waiting in claimNext

Whoever makes a job unclaimed (the sensor's batches and POST /jobs inserting it, a release, a finish with an
error while attempts are left, the end of a lapsed lease by a claim or by the reaper), these triggers send its
workflow's id on the channel the API processes LISTEN to (`nmdc_runtime.store.notices`), at the commit. Only
then: a claim, a heartbeat or a finish that leaves the job claimed or final sends nothing, since a transaction
that notifies takes a lock at its commit that every other notifying commit waits for. An insert is one
notification per workflow of the statement's new jobs, whatever their number (the sensor's batches are
thousands); a change of status is a row trigger that runs only when the status becomes `unclaimed`.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# The channel's name is `nmdc_runtime.store.notices.JOBS_UNCLAIMED`; written here as it was when this ran.
_CHANNEL = "nmdc_jobs_unclaimed"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE FUNCTION jobs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{_CHANNEL}', workflow_id)
            FROM (SELECT DISTINCT workflow_id FROM new_rows WHERE status = 'unclaimed') made;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER jobs_notify_inserted AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify_inserted()
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION jobs_notify_unclaimed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{_CHANNEL}', NEW.workflow_id);
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER jobs_notify_unclaimed AFTER UPDATE OF status ON jobs FOR EACH ROW
        WHEN (NEW.status = 'unclaimed' AND OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION jobs_notify_unclaimed()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_notify_unclaimed ON jobs")
    op.execute("DROP FUNCTION jobs_notify_unclaimed()")
    op.execute("DROP TRIGGER jobs_notify_inserted ON jobs")
    op.execute("DROP FUNCTION jobs_notify_inserted()")
