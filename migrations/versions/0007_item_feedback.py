"""items.feedback: the user's verdict on a thread item, kept with the item

Revision ID: 0007_item_feedback
Revises: 0006_signing_keys
Create Date: 2026-12-05
"""
from alembic import op
import sqlalchemy as sa


revision = '0007_item_feedback'
down_revision = '0006_signing_keys'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('chatkit_items') as batch_op:
        batch_op.add_column(sa.Column('feedback', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('feedback_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('chatkit_items') as batch_op:
        batch_op.drop_column('feedback_at')
        batch_op.drop_column('feedback')
