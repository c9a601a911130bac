"""Create the ledger table and record that this revision ran."""

from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.execute("CREATE TABLE ledger (revision text NOT NULL)")
    op.execute("INSERT INTO ledger VALUES ('0001')")


def downgrade() -> None:
    op.execute("DROP TABLE ledger")
