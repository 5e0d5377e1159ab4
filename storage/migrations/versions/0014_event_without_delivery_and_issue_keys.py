"""event: no foreign keys on delivery_id and issue_id — PostgreSQL checked three per event, more than half of
its CPU for a webhook post (issue 21)

A post of 1,000 SendGrid events cost PostgreSQL ~78 µs of CPU an event (benchmarks/webhook.py), of which the
three foreign-key checks ~45 µs: each is a query per inserted row that also locks the row it finds (FOR KEY
SHARE). The two dropped are implied by the one kept, event.subscriber_id: an event's delivery and issue are
those of a delivery found in the same transaction, deliveries are deleted only with their subscriber
(storage.subscribers.erase_subscriber; a claim deletes the ones an erase racing a fan-out left, which have no
subscriber to name), and issues are never deleted. Erasing a subscriber still deletes their events first.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 06:15:00.000000
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel

import storage.types


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def _event(*foreign_keys) -> sa.Table:
    """The event table with or without the two keys (SQLite rebuilds the table from this)."""
    metadata = sa.MetaData()
    for parent in ('delivery', 'subscriber', 'issue'):
        sa.Table(parent, metadata, sa.Column('id', sa.Integer(), primary_key=True))
    table = sa.Table(
        'event', metadata,
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('occurred_at', storage.types.UTCDateTime(), nullable=False),
        sa.Column('source', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('delivery_id', sa.Integer(), nullable=True),
        sa.Column('subscriber_id', sa.Integer(), nullable=True),
        sa.Column('issue_id', sa.Integer(), nullable=True),
        sa.Column('machine', sa.Boolean(), nullable=False),
        sa.Column('provider_event_id', sa.String(length=100), nullable=True),
        sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id']),
        sa.UniqueConstraint('provider_event_id'),
        *foreign_keys,
    )
    for column in ('delivery_id', 'issue_id', 'kind', 'subscriber_id'):
        sa.Index(f'ix_event_{column}', table.c[column])
    return table


def _old_foreign_keys() -> tuple:
    return (sa.ForeignKeyConstraint(['delivery_id'], ['delivery.id']),
            sa.ForeignKeyConstraint(['issue_id'], ['issue.id']))


def upgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        # SQLite cannot drop a constraint: the table is rebuilt without them.
        with op.batch_alter_table('event', copy_from=_event(), recreate='always'):
            pass
        return
    op.drop_constraint('event_delivery_id_fkey', 'event', type_='foreignkey')
    op.drop_constraint('event_issue_id_fkey', 'event', type_='foreignkey')


def downgrade() -> None:
    # Rows the keys would refuse: none are written, but a hand-made one would stop the downgrade.
    op.execute('DELETE FROM event WHERE delivery_id IS NOT NULL AND NOT EXISTS '
               '(SELECT 1 FROM delivery d WHERE d.id = event.delivery_id)')
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('event', copy_from=_event(*_old_foreign_keys()), recreate='always'):
            pass
        return
    op.create_foreign_key('event_delivery_id_fkey', 'event', 'delivery', ['delivery_id'], ['id'])
    op.create_foreign_key('event_issue_id_fkey', 'event', 'issue', ['issue_id'], ['id'])
