"""The reader's time (issue 19): a time zone and a cadence (weekly or monthly) per subscriber, the welcome
sent once, each delivery's due time (DIGEST_DELIVERY=local), an issue's kind (the weekly issue or a reader's
monthly one, with the weekly issues it covers) and the provider's batch id that holds its scheduled sends

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 22:30:00.000000
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel

import storage.types


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('subscriber', sa.Column('timezone', sa.String(length=64), nullable=True))
    op.add_column('subscriber', sa.Column('cadence', sa.String(length=8), server_default='weekly', nullable=False))
    op.add_column('subscriber', sa.Column('welcomed_at', storage.types.UTCDateTime(), nullable=True))
    op.add_column('delivery', sa.Column('due_at', storage.types.UTCDateTime(), nullable=True))
    op.add_column('issue', sa.Column('kind', sa.String(length=8), server_default='weekly', nullable=False))
    op.add_column('issue', sa.Column('covers', sqlmodel.sql.sqltypes.AutoString(), server_default='', nullable=False))
    op.add_column('issue', sa.Column('provider_batch_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column('issue', sa.Column('provider_hold', sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('issue') as batch:
        batch.drop_column('provider_hold')
        batch.drop_column('provider_batch_id')
        batch.drop_column('covers')
        batch.drop_column('kind')
    with op.batch_alter_table('delivery') as batch:
        batch.drop_column('due_at')
    with op.batch_alter_table('subscriber') as batch:
        batch.drop_column('welcomed_at')
        batch.drop_column('cadence')
        batch.drop_column('timezone')
