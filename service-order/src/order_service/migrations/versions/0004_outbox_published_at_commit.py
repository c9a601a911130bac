"""Events are published by the process that committed them (chassis `OutboxPublisher`); the relay
publishes only what that did not, polling for rows past its grace. Nothing listens for the
outbox's NOTIFY any more, and the trigger cost every committing transaction a notification and
the server's commit-time lock on the notification queue, which serialises such commits: dropped.

During a rolling deployment a previous-release replica's relay, which waits on NOTIFY, finds its
rows by its 5 s poll, or this release's relays take them after their grace.

Revision ID: 0004_outbox_published_at_commit
Revises: 0003_payment
"""

from alembic import op

revision = "0004_outbox_published_at_commit"
down_revision = "0003_payment"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")


def downgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('outbox', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox"
        " FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
    )
