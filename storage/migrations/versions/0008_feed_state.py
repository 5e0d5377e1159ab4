"""feed_state: what the comparison feed last answered (issue 16), shared by every scheduler and host

The validators of the last answer imported (ETag, Last-Modified) for the next conditional GET, when the
feed last answered and what it brought, and the error it fails with since, for `digest send --dry-run`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 17:00:00.000000
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel

import storage.types


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('feed_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('etag', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('last_modified', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('answered_at', storage.types.UTCDateTime(), nullable=True),
    sa.Column('not_modified', sa.Boolean(), nullable=False),
    sa.Column('created', sa.Integer(), nullable=False),
    sa.Column('updated', sa.Integer(), nullable=False),
    sa.Column('unchanged', sa.Integer(), nullable=False),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('failing_since', storage.types.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('url')
    )


def downgrade() -> None:
    op.drop_table('feed_state')
