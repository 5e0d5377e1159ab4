"""Reputation (issue 18): an issue can be paused (by hand or by the guardrail, with the reason), resumed or
cancelled, the guardrail adds up what the Event Webhook reports and sends its alert once; a silent reader
is asked once before going dormant

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 19:05:00.000000
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel

import storage.types


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('issue', sa.Column('paused_at', storage.types.UTCDateTime(), nullable=True))
    op.add_column('issue', sa.Column('pause_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column('issue', sa.Column('cancelled_at', storage.types.UTCDateTime(), nullable=True))
    op.add_column('issue', sa.Column('alerted_at', storage.types.UTCDateTime(), nullable=True))
    for name in ('reported_delivered', 'reported_bounced', 'reported_dropped', 'reported_complaints'):
        op.add_column('issue', sa.Column(name, sa.Integer(), nullable=False, server_default='0'))
    op.add_column('subscriber', sa.Column('repermission_sent_at', storage.types.UTCDateTime(), nullable=True))
    op.create_table('send_day',
    sa.Column('day', sa.String(length=10), nullable=False),
    sa.Column('used', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day')
    )


def downgrade() -> None:
    op.drop_table('send_day')
    with op.batch_alter_table('subscriber') as batch:
        batch.drop_column('repermission_sent_at')
    with op.batch_alter_table('issue') as batch:
        for name in ('reported_complaints', 'reported_dropped', 'reported_bounced', 'reported_delivered'):
            batch.drop_column(name)
        batch.drop_column('alerted_at')
        batch.drop_column('cancelled_at')
        batch.drop_column('pause_reason')
        batch.drop_column('paused_at')
