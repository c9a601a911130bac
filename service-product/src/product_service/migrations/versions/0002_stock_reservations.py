"""Stock reservations of the checkout saga, and the outbox/inbox columns and indexes the chassis
relay and retention use since this revision was written.

Revision ID: 0002_stock_reservations
Revises: 0001_products
"""

from alembic import op

from chassis.migrations import execute_script

revision = "0002_stock_reservations"
down_revision = "0001_products"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        ALTER TABLE outbox
            ADD COLUMN attempts integer NOT NULL DEFAULT 0,
            ADD COLUMN last_error text,
            ADD COLUMN parked_at timestamptz;
        DROP INDEX IF EXISTS outbox_unpublished_idx;
        CREATE INDEX outbox_pending_idx ON outbox (id)
            WHERE published_at IS NULL AND parked_at IS NULL;
        CREATE INDEX outbox_published_at_idx ON outbox (published_at)
            WHERE published_at IS NOT NULL;
        CREATE INDEX inbox_processed_at_idx ON inbox (processed_at);

        CREATE TABLE stock_reservations (
            order_id    uuid PRIMARY KEY,
            status      text NOT NULL
                        CHECK (status IN ('RESERVED', 'REJECTED', 'RELEASED', 'CANCELLED')),
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE stock_reservation_lines (
            order_id    uuid NOT NULL REFERENCES stock_reservations (order_id),
            product_id  uuid NOT NULL,
            quantity    integer NOT NULL CHECK (quantity > 0),
            PRIMARY KEY (order_id, product_id)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE stock_reservation_lines")
    op.execute("DROP TABLE stock_reservations")
    op.execute("DROP INDEX inbox_processed_at_idx")
    op.execute("DROP INDEX outbox_published_at_idx")
    op.execute("DROP INDEX outbox_pending_idx")
    op.execute("CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL")
    op.execute(
        "ALTER TABLE outbox DROP COLUMN parked_at, DROP COLUMN last_error, DROP COLUMN attempts"
    )
