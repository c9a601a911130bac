"""A version on every product, bumped by every update (a trigger, so no writer can forget it):
the cache compares versions, so a product written to it after a change never goes back to an
older one, whichever of two replicas' writes lands last.

Revision ID: 0003_product_versions
Revises: 0002_stock_reservations
"""

from alembic import op

from chassis.migrations import execute_script

revision = "0003_product_versions"
down_revision = "0002_stock_reservations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_script(
        """
        ALTER TABLE products ADD COLUMN version bigint NOT NULL DEFAULT 1;
        CREATE FUNCTION products_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.version := OLD.version + 1;
            RETURN NEW;
        END
        $$;
        CREATE TRIGGER products_version BEFORE UPDATE ON products
            FOR EACH ROW EXECUTE FUNCTION products_bump_version();
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER products_version ON products")
    op.execute("DROP FUNCTION products_bump_version()")
    op.execute("ALTER TABLE products DROP COLUMN version")
