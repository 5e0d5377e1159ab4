"""delivery: no index on what a send updates, one foreign key fewer, room on each page for the updates

A send writes every delivery row twice after the fan-out (the lease, then the outcome). With `status` in
the claim index every write added an entry to all four indexes of the table; now no index holds a column
the sender changes, so PostgreSQL updates the row in place on its page (a HOT update: fillfactor 30 keeps
room for it) and SQLite leaves the indexes alone. The fan-out checks one foreign key fewer per row:
(segment_id, issue_id) → segment replaces the two single ones. The subscriber's own index is gone: the
unique (subscriber_id, issue_id) serves those lookups.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 00:30:00.000000
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel

import storage.types


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _delivery(*constraints, indexes) -> sa.Table:
    """The delivery table as one of the two revisions has it (SQLite rebuilds the table from this)."""
    metadata = sa.MetaData()
    sa.Table('segment', metadata, sa.Column('id', sa.Integer(), primary_key=True), sa.Column('issue_id', sa.Integer()))
    sa.Table('issue', metadata, sa.Column('id', sa.Integer(), primary_key=True))
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
        sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id']),
        sa.PrimaryKeyConstraint('id'),
        *constraints,
    )
    for name, columns in indexes.items():
        sa.Index(name, *(table.c[column] for column in columns))
    return table


def _new() -> sa.Table:
    return _delivery(
        sa.ForeignKeyConstraint(['segment_id', 'issue_id'], ['segment.id', 'segment.issue_id'],
                                name='fk_delivery_segment_issue'),
        sa.UniqueConstraint('subscriber_id', 'issue_id', name='uq_delivery_subscriber_issue'),
        indexes={'ix_delivery_claim': ['issue_id', 'segment_id', 'id']},
    )


def _old() -> sa.Table:
    return _delivery(
        sa.ForeignKeyConstraint(['issue_id'], ['issue.id']),
        sa.ForeignKeyConstraint(['segment_id'], ['segment.id']),
        sa.UniqueConstraint('issue_id', 'subscriber_id'),
        indexes={'ix_delivery_issue_status': ['issue_id', 'status', 'segment_id', 'id'],
                 'ix_delivery_subscriber_id': ['subscriber_id']},
    )


def upgrade() -> None:
    op.create_index('uq_segment_id_issue_id', 'segment', ['id', 'issue_id'], unique=True)
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite cannot change a table's constraints: rebuild it (foreign keys are off during migrations,
        # storage/migrations/env.py, and checked once at the end).
        with op.batch_alter_table('delivery', copy_from=_new(), recreate='always'):
            pass
        return
    # PostgreSQL's own names for the constraints that 0001 left unnamed.
    op.drop_constraint('delivery_issue_id_fkey', 'delivery', type_='foreignkey')
    op.drop_constraint('delivery_segment_id_fkey', 'delivery', type_='foreignkey')
    op.create_foreign_key('fk_delivery_segment_issue', 'delivery', 'segment',
                          ['segment_id', 'issue_id'], ['id', 'issue_id'])
    op.create_unique_constraint('uq_delivery_subscriber_issue', 'delivery', ['subscriber_id', 'issue_id'])
    op.drop_constraint('delivery_issue_id_subscriber_id_key', 'delivery', type_='unique')
    op.drop_index('ix_delivery_subscriber_id', table_name='delivery')
    op.drop_index('ix_delivery_issue_status', table_name='delivery')
    op.create_index('ix_delivery_claim', 'delivery', ['issue_id', 'segment_id', 'id'])
    # Rows written from now on leave 70 % of each page free for their two updates.
    op.execute('ALTER TABLE delivery SET (fillfactor = 30)')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('delivery', copy_from=_old(), recreate='always'):
            pass
    else:
        op.execute('ALTER TABLE delivery RESET (fillfactor)')
        op.drop_index('ix_delivery_claim', table_name='delivery')
        op.create_index('ix_delivery_issue_status', 'delivery', ['issue_id', 'status', 'segment_id', 'id'])
        op.create_index('ix_delivery_subscriber_id', 'delivery', ['subscriber_id'])
        op.create_unique_constraint('delivery_issue_id_subscriber_id_key', 'delivery', ['issue_id', 'subscriber_id'])
        op.drop_constraint('uq_delivery_subscriber_issue', 'delivery', type_='unique')
        op.drop_constraint('fk_delivery_segment_issue', 'delivery', type_='foreignkey')
        op.create_foreign_key('delivery_issue_id_fkey', 'delivery', 'issue', ['issue_id'], ['id'])
        op.create_foreign_key('delivery_segment_id_fkey', 'delivery', 'segment', ['segment_id'], ['id'])
    op.drop_index('uq_segment_id_issue_id', table_name='segment')
