"""logins: the server-side login record, used one-time tokens and the mail outbox

Revision ID: 0003_logins
Revises: 0002_chatkit_runtime
Create Date: 2026-11-30

"""

import sqlalchemy as sa
from alembic import op

revision = "0003_logins"
down_revision = "0002_chatkit_runtime"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "logins",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=False),
        sa.Column("user_agent", sa.String(length=256), nullable=True),
        sa.Column("remember", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("logins", schema=None) as batch_op:
        batch_op.create_index("ix_logins_user_live", ["user_id", "ended_at"], unique=False)
    op.create_table(
        "used_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("used_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_used_tokens_expires_at"), ["expires_at"], unique=False
        )
    op.create_table(
        "mail_outbox",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=True),
        sa.Column("base_url", sa.String(length=512), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("mail_outbox", schema=None) as batch_op:
        batch_op.create_index("ix_mail_outbox_due", ["status", "next_attempt_at"], unique=False)
    # Refresh tokens and sessions issued before logins existed belong to no login: they are
    # refused from now on, and their users log in once more.
    op.execute("UPDATE refresh_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE revoked_at IS NULL")


def downgrade():
    with op.batch_alter_table("mail_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_mail_outbox_due")
    op.drop_table("mail_outbox")
    with op.batch_alter_table("used_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_used_tokens_expires_at"))
    op.drop_table("used_tokens")
    with op.batch_alter_table("logins", schema=None) as batch_op:
        batch_op.drop_index("ix_logins_user_live")
    op.drop_table("logins")
