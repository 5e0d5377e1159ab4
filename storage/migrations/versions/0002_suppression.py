"""suppression: hashes of addresses that must never be added again

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 17:06:59.708840
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel
import storage.types


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('suppression',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email_hash', sa.String(length=64), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('created_at', storage.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email_hash')
    )


def downgrade() -> None:
    op.drop_table('suppression')
