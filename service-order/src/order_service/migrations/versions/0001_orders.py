"""Orders, their lines and the idempotency keys, with the indexes that serve a user's order
pages and the saga timeout sweeper, plus the chassis outbox and inbox tables of the saga.

Revision ID: 0001_orders
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
    published_at    timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    parked_at       timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_pending_idx ON outbox (id)
    WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_published_at_idx ON outbox (published_at)
    WHERE published_at IS NOT NULL;
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
CREATE INDEX IF NOT EXISTS inbox_processed_at_idx ON inbox (processed_at);
"""

ORDERS_DDL = """
CREATE TABLE orders (
    id                 uuid PRIMARY KEY,
    user_id            uuid NOT NULL,
    status             text NOT NULL
                       CHECK (status IN ('PENDING', 'CONFIRMED', 'CANCELLED')),
    cancel_reason      text
                       CHECK (cancel_reason IN ('OUT_OF_STOCK', 'USER_CANCELLED', 'TIMEOUT')),
    total_cents        bigint NOT NULL CHECK (total_cents > 0),
    currency           char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    stock_released_at  timestamptz,
    -- A reason exactly when the order is cancelled.
    CONSTRAINT orders_cancel_reason_matches_status
        CHECK ((status = 'CANCELLED') = (cancel_reason IS NOT NULL))
);
-- ListOrders: a user's orders newest first, keyset on (created_at, id).
CREATE INDEX orders_user_newest ON orders (user_id, created_at DESC, id DESC);
-- The saga timeout sweeper: the oldest PENDING orders (a small, hot part of the table).
CREATE INDEX orders_pending_by_age ON orders (created_at) WHERE status = 'PENDING';

-- Lines as priced at checkout (never repriced); line_no keeps the cart's order.
CREATE TABLE order_lines (
    order_id          uuid NOT NULL REFERENCES orders (id),
    line_no           smallint NOT NULL CHECK (line_no >= 0),
    product_id        uuid NOT NULL,
    name              text NOT NULL,
    unit_price_cents  bigint NOT NULL CHECK (unit_price_cents > 0),
    quantity          integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, line_no)
);

-- A user's idempotency key and the order it made. The key is claimed before the order row is
-- inserted in the same transaction, hence the deferred foreign key.
CREATE TABLE idempotency_keys (
    user_id     uuid NOT NULL,
    key         text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    order_id    uuid NOT NULL REFERENCES orders (id) DEFERRABLE INITIALLY DEFERRED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
"""

revision = "0001_orders"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(ORDERS_DDL)
    execute_script(OUTBOX_DDL)
    execute_script(INBOX_DDL)


def downgrade() -> None:
    op.execute("DROP TABLE inbox")
    op.execute("DROP TABLE outbox")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
    op.execute("DROP TABLE idempotency_keys")
    op.execute("DROP TABLE order_lines")
    op.execute("DROP TABLE orders")
