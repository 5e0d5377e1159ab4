"""The guardrail judges by when events happened (issue 21): an issue resumed by hand counts only the events
that happened since, however late the Event Webhook brings the ones before

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 06:00:00.000000
"""

from alembic import op
import sqlalchemy as sa

import storage.types


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('issue', sa.Column('judged_since', storage.types.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('issue') as batch:
        batch.drop_column('judged_since')
