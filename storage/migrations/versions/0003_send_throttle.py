"""send_throttle: the shared "blocked until" of a provider rate limit, one row for every worker

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:30:00.000000
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel
import storage.types


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('send_throttle',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('blocked_until', storage.types.UTCDateTime(), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('send_throttle')
