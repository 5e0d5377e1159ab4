"""subscriber, delivery: ids never handed out twice, and a random link tag per subscriber row

The links in an email name a subscriber id and a delivery id. SQLite hands out max(id) + 1, so deleting
the newest subscriber gave their id to the next signup, and the deleted person's old links opened the new
person's preference centre. Now:

- SQLite: both tables are rebuilt with AUTOINCREMENT, whose counter (sqlite_sequence) starts at the
  largest id stored and never goes back. PostgreSQL's sequences already never go back: nothing to do.
- subscriber.link_tag: a random 48-bit number drawn by the database for each row, present ones included.
  New links carry it, and a link is honoured only by the row with its tag: even a restored backup that
  hands an id out again cannot revive a deleted subscriber's links.
- subscriber.accepts_untagged_links: true for every row stored now, whose emails went out with links
  without a tag (those keep working), false for every row inserted after.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 13:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel

import storage.types


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# storage.models.RandomLinkTag, as each database writes it (a migration does not import the models).
_RANDOM_TAG = {'sqlite': '(random() & 281474976710655)', 'postgresql': '(floor(random() * 281474976710656))::bigint'}


def _subscriber() -> sa.Table:
    """The subscriber table as 0006 has it (SQLite rebuilds the table from this)."""
    table = sa.Table(
        'subscriber', sa.MetaData(),
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('email', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('email_key', sa.String(length=320), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('categories', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('paused_until', storage.types.UTCDateTime(), nullable=True),
        sa.Column('created_at', storage.types.UTCDateTime(), nullable=False),
        sa.Column('updated_at', storage.types.UTCDateTime(), nullable=False),
        sa.Column('confirmed_at', storage.types.UTCDateTime(), nullable=True),
        sa.Column('unsubscribed_at', storage.types.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('email_key'),
    )
    sa.Index('ix_subscriber_categories', table.c.categories)
    sa.Index('ix_subscriber_status', table.c.status)
    return table


def _delivery() -> sa.Table:
    """The delivery table as 0006 left it, and as it stays."""
    table = sa.Table(
        'delivery', sa.MetaData(),
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
    )
    sa.Index('ix_delivery_claim', table.c.issue_id, table.c.segment_id, table.c.id)
    return table


def _tag_columns(dialect: str, *, untagged_default) -> list[sa.Column]:
    return [sa.Column('link_tag', sa.BigInteger(), nullable=False, server_default=sa.text(_RANDOM_TAG[dialect])),
            sa.Column('accepts_untagged_links', sa.Boolean(), nullable=False, server_default=untagged_default)]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == 'sqlite':
        # Rebuilt with AUTOINCREMENT: the copy of the rows sets sqlite_sequence to the largest id stored, and
        # the rename carries it over. The copy leaves out the new columns, so each row draws its own tag.
        with op.batch_alter_table('subscriber', copy_from=_subscriber(), recreate='always',
                                  table_kwargs={'sqlite_autoincrement': True}) as batch:
            for column in _tag_columns(dialect, untagged_default=sa.false()):
                batch.add_column(column)
        op.execute('UPDATE subscriber SET accepts_untagged_links = 1')
        with op.batch_alter_table('delivery', copy_from=_delivery(), recreate='always',
                                  table_kwargs={'sqlite_autoincrement': True}):
            pass
        return
    # PostgreSQL: a volatile default rewrites the table once, drawing per row; the constant true then
    # stands for the rows present (no rewrite), and rows inserted from now on get false.
    for column in _tag_columns(dialect, untagged_default=sa.true()):
        op.add_column('subscriber', column)
    op.alter_column('subscriber', 'accepts_untagged_links', server_default=sa.false())


def downgrade() -> None:
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('delivery', copy_from=_delivery(), recreate='always'):
            pass
        columns = _subscriber()
        for column in _tag_columns('sqlite', untagged_default=sa.false()):
            columns.append_column(column)
        with op.batch_alter_table('subscriber', copy_from=columns, recreate='always') as batch:
            batch.drop_column('accepts_untagged_links')
            batch.drop_column('link_tag')
        return  # dropping the AUTOINCREMENT tables dropped their sqlite_sequence rows
    op.drop_column('subscriber', 'accepts_untagged_links')
    op.drop_column('subscriber', 'link_tag')
