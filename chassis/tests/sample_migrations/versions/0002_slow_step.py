"""A slow revision, so concurrent migrators really overlap; records that it ran."""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.execute("SELECT pg_sleep(0.5)")
    op.execute("INSERT INTO ledger VALUES ('0002')")


def downgrade() -> None:
    op.execute("DELETE FROM ledger WHERE revision = '0002'")
