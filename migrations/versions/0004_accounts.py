"""accounts: verification sent, last login, disabled

Revision ID: 0004_accounts
Revises: 0003_logins
Create Date: 2026-11-30

"""

import sqlalchemy as sa
from alembic import op

revision = "0004_accounts"
down_revision = "0003_logins"
branch_labels = None
depends_on = None

COLUMNS = ("verification_sent_at", "last_login_at", "disabled_at")


def upgrade():
    # batch mode: SQLite cannot add and drop columns in place the way PostgreSQL does.
    with op.batch_alter_table("users") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("users") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
