"""The payment step (saga version 2): each order states which saga it runs, and a version-2
order holds its payment token and payment status; PAYMENT_DECLINED becomes a cancel reason.

`saga_version` defaults to 1, so every existing row, and every row a replica of the previous
release inserts during a rolling deployment (it knows nothing of the column), stays a version-1
order: confirmed on `stock.reserved`, nothing charged. This release inserts version 2.

`orders_confirmed_only_once_paid` is what makes the rollout safe whatever code writes: a
version-2 order can be CONFIRMED only with its payment AUTHORIZED. A previous-release replica
that handles `stock.reserved` for a version-2 order (it confirms on it) fails on the constraint;
its transaction, inbox claim included, rolls back and the chassis consumer redelivers the event
after a delay (an ordinary handler failure, dead-lettered at DELIVERY_LIMIT), so a replica of
this release, which ignores `stock.reserved` for version 2, acknowledges it.

Revision ID: 0003_payment
Revises: 0002_confirmed_at
"""

from chassis.migrations import execute_script

revision = "0003_payment"
down_revision = "0002_confirmed_at"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        ALTER TABLE orders
            ADD COLUMN saga_version smallint NOT NULL DEFAULT 1
                CONSTRAINT orders_saga_version_known CHECK (saga_version IN (1, 2)),
            ADD COLUMN payment_token text,
            ADD COLUMN payment_status text
                CONSTRAINT orders_payment_status_known CHECK (payment_status IN
                    ('PENDING', 'AUTHORIZED', 'DECLINED', 'REFUNDED', 'VOIDED'));
        ALTER TABLE orders DROP CONSTRAINT orders_cancel_reason_check;
        ALTER TABLE orders ADD CONSTRAINT orders_cancel_reason_check
            CHECK (cancel_reason IN ('OUT_OF_STOCK', 'USER_CANCELLED', 'TIMEOUT',
                                     'PAYMENT_DECLINED'));
        -- A version-1 order has no payment at all; a version-2 order always has one.
        ALTER TABLE orders ADD CONSTRAINT orders_payment_only_in_saga_version_2
            CHECK (CASE WHEN saga_version = 1
                        THEN payment_token IS NULL AND payment_status IS NULL
                        ELSE payment_token IS NOT NULL AND payment_status IS NOT NULL END);
        -- Whatever code writes (an older replica confirms on stock.reserved): a version-2 order
        -- is CONFIRMED only once its payment is authorised.
        ALTER TABLE orders ADD CONSTRAINT orders_confirmed_only_once_paid
            CHECK (saga_version = 1 OR status <> 'CONFIRMED' OR payment_status = 'AUTHORIZED');
        """
    )


def downgrade() -> None:
    execute_script(
        """
        ALTER TABLE orders DROP CONSTRAINT orders_confirmed_only_once_paid;
        ALTER TABLE orders DROP CONSTRAINT orders_payment_only_in_saga_version_2;
        ALTER TABLE orders DROP CONSTRAINT orders_cancel_reason_check;
        ALTER TABLE orders ADD CONSTRAINT orders_cancel_reason_check
            CHECK (cancel_reason IN ('OUT_OF_STOCK', 'USER_CANCELLED', 'TIMEOUT'));
        ALTER TABLE orders DROP COLUMN payment_status;
        ALTER TABLE orders DROP COLUMN payment_token;
        ALTER TABLE orders DROP COLUMN saga_version;
        """
    )
