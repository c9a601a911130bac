"""Payments, one per order placed with a payment token, with the index the provider worker
polls, plus the chassis outbox and inbox tables of the saga.

Revision ID: 0001_payments
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

PAYMENTS_DDL = """
CREATE TABLE payments (
    order_id                      uuid PRIMARY KEY,
    -- What to charge, from order.created; NULL while only early saga facts are known.
    user_id                       uuid,
    amount_cents                  bigint CHECK (amount_cents > 0),
    currency                      char(3) CHECK (currency ~ '^[A-Z]{3}$'),
    payment_token                 text,
    state                         text NOT NULL DEFAULT 'PENDING'
                                  CHECK (state IN ('PENDING', 'AUTHORIZING', 'AUTHORIZED',
                                         'CAPTURED', 'DECLINED', 'VOIDED', 'REFUNDED')),
    intent_known                  boolean NOT NULL DEFAULT false,
    stock_reserved                boolean NOT NULL DEFAULT false,
    confirmed                     boolean NOT NULL DEFAULT false,
    cancel_requested              boolean NOT NULL DEFAULT false,
    cancelled_after_confirmation  boolean NOT NULL DEFAULT false,
    provider_attempts             integer NOT NULL DEFAULT 0 CHECK (provider_attempts >= 0),
    consecutive_failures          integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    decline_reason                text,
    -- When the worker should call the provider next (NULL: nothing to do); a lease pushes it on.
    next_attempt_at               timestamptz,
    -- When the authorisation was first wanted (its retries stop a deadline after it).
    wanted_since                  timestamptz,
    -- The trace of the event that last made the payment due (W3C traceparent/tracestate as
    -- JSON): the worker's provider call and the events it publishes continue it.
    trace_context                 jsonb NOT NULL DEFAULT '{}',
    created_at                    timestamptz NOT NULL DEFAULT now(),
    updated_at                    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_intent_complete CHECK (
        intent_known = (user_id IS NOT NULL AND amount_cents IS NOT NULL
                        AND currency IS NOT NULL AND payment_token IS NOT NULL)),
    -- Nothing leaves PENDING before its intent is known.
    CONSTRAINT payments_moves_with_intent CHECK (intent_known OR state = 'PENDING')
);
-- The worker: the payments due for a provider call, soonest first (a small, hot part).
CREATE INDEX payments_due ON payments (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
"""

revision = "0001_payments"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(PAYMENTS_DDL)
    execute_script(OUTBOX_DDL)
    execute_script(INBOX_DDL)


def downgrade() -> None:
    op.execute("DROP TABLE inbox")
    op.execute("DROP TABLE outbox")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify()")
    op.execute("DROP TABLE payments")
