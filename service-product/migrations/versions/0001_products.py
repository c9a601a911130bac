"""Products table with the indexes that serve name search and keyset pages, plus the chassis
outbox and inbox tables the checkout saga needs.

Revision ID: 0001_products
Revises:
"""

from alembic import op

from chassis.messaging import INBOX_DDL, OUTBOX_DDL
from chassis.migrations import execute_script

revision = "0001_products"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(
        """
        CREATE TABLE products (
            id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            sku         text NOT NULL CONSTRAINT products_sku_key UNIQUE
                        CHECK (char_length(sku) BETWEEN 1 AND 64),
            name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
            description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 5000),
            price_cents bigint NOT NULL CHECK (price_cents > 0),
            currency    char(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
            stock       integer NOT NULL CHECK (stock >= 0),
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # `q` is a substring match on lower(name): trigrams let LIKE '%x%' use an index.
    op.execute("CREATE INDEX products_name_trgm ON products USING gin (lower(name) gin_trgm_ops)")
    # ListProducts pages by (lower(name), id): this btree serves the keyset comparison and order.
    op.execute("CREATE INDEX products_name_keyset ON products (lower(name), id)")
    execute_script(OUTBOX_DDL)
    execute_script(INBOX_DDL)


def downgrade() -> None:
    op.execute("DROP TABLE inbox")
    op.execute("DROP TABLE outbox")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
    op.execute("DROP TABLE products")
