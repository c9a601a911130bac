"""Create the users table with case-insensitively unique emails.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users (
            id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
            email         text        NOT NULL CHECK (email = lower(email)),
            full_name     text        NOT NULL,
            role          text        NOT NULL CHECK (role IN ('customer', 'admin')),
            password_hash text        NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # Emails are stored normalised; the index on lower(email) still guards against any writer
    # that forgets, and serves the login lookup.
    op.execute("CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email))")


def downgrade() -> None:
    op.execute("DROP TABLE users")
