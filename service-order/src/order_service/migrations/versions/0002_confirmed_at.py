"""When each order was confirmed, so a checkout can tell which confirmed orders may still have
their lines in the buyer's cart (the cart gives them up when it handles `order.confirmed`).

Orders confirmed before this revision keep NULL: their lines left the cart long ago.

Revision ID: 0002_confirmed_at
Revises: 0001_orders
"""

from alembic import op

from chassis.migrations import execute_script

revision = "0002_confirmed_at"
down_revision = "0001_orders"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        ALTER TABLE orders ADD COLUMN confirmed_at timestamptz;
        ALTER TABLE orders ADD CONSTRAINT orders_confirmed_at_only_once_confirmed
            CHECK (confirmed_at IS NULL OR status <> 'PENDING');
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE orders DROP CONSTRAINT orders_confirmed_at_only_once_confirmed")
    op.execute("ALTER TABLE orders DROP COLUMN confirmed_at")
