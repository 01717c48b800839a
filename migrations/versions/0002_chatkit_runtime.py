"""the ChatKit runtime: threads, items, attachments, and each session's current thread

Revision ID: 0002_chatkit_runtime
Revises: 0001
Create Date: 2026-11-30

"""

import sqlalchemy as sa
from alembic import op

revision = "0002_chatkit_runtime"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("codex_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("thread_id", sa.String(length=64), nullable=True))

    op.create_table(
        "chatkit_threads",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("codex_session_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["codex_session_id"], ["codex_sessions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("chatkit_threads", schema=None) as batch_op:
        batch_op.create_index(
            "ix_chatkit_threads_session_created", ["codex_session_id", "created_at"], unique=False
        )

    op.create_table(
        "chatkit_items",
        sa.Column("position", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("item_id", sa.String(length=64), nullable=False),
        sa.Column("thread_id", sa.String(length=64), nullable=False),
        sa.Column("codex_session_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["codex_session_id"], ["codex_sessions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["thread_id"], ["chatkit_threads.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("position"),
    )
    with op.batch_alter_table("chatkit_items", schema=None) as batch_op:
        batch_op.create_index("ix_chatkit_items_session", ["codex_session_id"], unique=False)
        batch_op.create_index(
            "uq_chatkit_items_thread_item", ["thread_id", "item_id"], unique=True
        )

    op.create_table(
        "chatkit_attachments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("codex_session_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["codex_session_id"], ["codex_sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("chatkit_attachments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_chatkit_attachments_codex_session_id"),
            ["codex_session_id"],
            unique=False,
        )


def downgrade():
    with op.batch_alter_table("chatkit_attachments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chatkit_attachments_codex_session_id"))
    op.drop_table("chatkit_attachments")
    with op.batch_alter_table("chatkit_items", schema=None) as batch_op:
        batch_op.drop_index("uq_chatkit_items_thread_item")
        batch_op.drop_index("ix_chatkit_items_session")
    op.drop_table("chatkit_items")
    with op.batch_alter_table("chatkit_threads", schema=None) as batch_op:
        batch_op.drop_index("ix_chatkit_threads_session_created")
    op.drop_table("chatkit_threads")
    with op.batch_alter_table("codex_sessions", schema=None) as batch_op:
        batch_op.drop_column("thread_id")
