"""delivery: no foreign keys — PostgreSQL checked two per fanned-out row, 60 % of a million-row fan-out

Opening an issue of a million recipients took 16-18 s on PostgreSQL, 6 s without the checks on
delivery.subscriber_id and (segment_id, issue_id): each check is a query per inserted row, and the
subscriber's also locks the subscriber row (a write, and WAL, per recipient). What they guarded is kept
another way (storage.models.Delivery): only the fan-out inserts deliveries, with the segments it created
in the same transaction; erasing a subscriber deletes their deliveries, and the one delivery an erase
racing a fan-out can leave behind is deleted by the claim that finds it. The index on segment (id,
issue_id) was only the target of the composite key: dropped with it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 06:30:00.000000
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel

import storage.types


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def _delivery(*foreign_keys) -> sa.Table:
    """The delivery table with or without its foreign keys (SQLite rebuilds the table from this)."""
    metadata = sa.MetaData()
    sa.Table('segment', metadata, sa.Column('id', sa.Integer(), primary_key=True), sa.Column('issue_id', sa.Integer()))
    sa.Table('subscriber', metadata, sa.Column('id', sa.Integer(), primary_key=True))
    table = sa.Table(
        'delivery', metadata,
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('issue_id', sa.Integer(), nullable=False),
        sa.Column('subscriber_id', sa.Integer(), nullable=False),
        sa.Column('segment_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('ambiguous_resends', sa.Integer(), nullable=False),
        sa.Column('lease_owner', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('leased_until', storage.types.UTCDateTime(), nullable=True),
        sa.Column('message_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('created_at', storage.types.UTCDateTime(), nullable=False),
        sa.Column('sent_at', storage.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('subscriber_id', 'issue_id', name='uq_delivery_subscriber_issue'),
        *foreign_keys,
    )
    sa.Index('ix_delivery_claim', table.c.issue_id, table.c.segment_id, table.c.id)
    return table


def _old_foreign_keys() -> tuple:
    return (sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id']),
            sa.ForeignKeyConstraint(['segment_id', 'issue_id'], ['segment.id', 'segment.issue_id'],
                                    name='fk_delivery_segment_issue'))


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite cannot drop a constraint: the table is rebuilt without them.
        with op.batch_alter_table('delivery', copy_from=_delivery(), recreate='always'):
            pass
    else:
        op.drop_constraint('delivery_subscriber_id_fkey', 'delivery', type_='foreignkey')
        op.drop_constraint('fk_delivery_segment_issue', 'delivery', type_='foreignkey')
    op.drop_index('uq_segment_id_issue_id', table_name='segment')


def downgrade() -> None:
    # Rows the keys would refuse: deliveries of erased subscribers that no claim has met yet. Erasing
    # meant deleting them.
    op.execute('DELETE FROM delivery WHERE NOT EXISTS (SELECT 1 FROM subscriber s WHERE s.id = delivery.subscriber_id)')
    op.create_index('uq_segment_id_issue_id', 'segment', ['id', 'issue_id'], unique=True)
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('delivery', copy_from=_delivery(*_old_foreign_keys()), recreate='always'):
            pass
        return
    op.create_foreign_key('delivery_subscriber_id_fkey', 'delivery', 'subscriber', ['subscriber_id'], ['id'])
    op.create_foreign_key('fk_delivery_segment_issue', 'delivery', 'segment',
                          ['segment_id', 'issue_id'], ['id', 'issue_id'])
