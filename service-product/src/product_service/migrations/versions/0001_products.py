"""Products table with the indexes that serve name search and keyset pages, plus the chassis
outbox and inbox tables the checkout saga needs.

Revision ID: 0001_products
Revises:
"""

from alembic import op

from chassis.migrations import execute_script

# The chassis outbox and inbox tables as they were when this revision was written: a migration is
# history, so it never reads the library's live DDL (a later change is a later revision).
OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    id              bigserial PRIMARY KEY,
    event_id        uuid NOT NULL UNIQUE,
    event_type      text NOT NULL,
    routing_key     text NOT NULL,
    correlation_id  text NOT NULL,
    payload         bytea NOT NULL,
    trace_context   jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
"""

INBOX_DDL = """
CREATE TABLE IF NOT EXISTS inbox (
    consumer      text NOT NULL,
    event_id      uuid NOT NULL,
    event_type    text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
"""

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
