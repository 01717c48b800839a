"""ChatKit signing keys in the database, sealed (AES-GCM), shared by every host

Revision ID: 0006_signing_keys
Revises: 0005_identities
Create Date: 2026-11-30

Keys that earlier versions kept as files in CHATKIT_KEYS_DIR are imported on first use (or
with `flask keys import`), not here: sealing them needs the application's configuration.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_signing_keys'
down_revision = '0005_identities'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('signing_keys',
    sa.Column('sequence', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('retired_at', sa.DateTime(), nullable=True),
    sa.Column('sealed_jwk', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('sequence'),
    sa.UniqueConstraint('kid')
    )


def downgrade():
    op.drop_table('signing_keys')
