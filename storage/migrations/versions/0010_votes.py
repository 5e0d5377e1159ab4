"""Readers' votes (issue 17): vote (one standing vote per reader and tool), vote_event (every vote cast, in
order: the pull API's pages and the site push's outbox), site_push (how far the push has got), and the
readers' results an issue carries (issue.reader_results) to the readers of the one before (segment.reader_results)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 18:40:00.000000
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel

import storage.types


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('issue', sa.Column('reader_results', sqlmodel.sql.sqltypes.AutoString(), server_default='',
                                     nullable=False))
    op.add_column('segment', sa.Column('reader_results', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table('vote',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscriber_id', sa.Integer(), nullable=False),
    sa.Column('comparison_id', sa.Integer(), nullable=False),
    sa.Column('tool_position', sa.Integer(), nullable=False),
    sa.Column('choice', sqlmodel.sql.sqltypes.AutoString(length=4), nullable=False),
    sa.Column('issue_id', sa.Integer(), nullable=True),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('cast_at', storage.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['comparison_id'], ['comparison.id'], ),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscriber.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('subscriber_id', 'comparison_id', 'tool_position', name='uq_vote_reader_tool')
    )
    op.create_index('ix_vote_tool', 'vote', ['comparison_id', 'tool_position', 'choice'], unique=False)
    op.create_index('ix_vote_issue_id', 'vote', ['issue_id'], unique=False)
    op.create_table('vote_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('comparison', sa.String(length=200), nullable=False),
    sa.Column('tool', sa.Integer(), nullable=False),
    sa.Column('choice', sqlmodel.sql.sqltypes.AutoString(length=4), nullable=False),
    sa.Column('voter', sa.String(length=64), nullable=False),
    sa.Column('cast_at', storage.types.UTCDateTime(), nullable=False),
    sa.Column('replaces', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('site_push',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pushed_through', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', storage.types.UTCDateTime(), nullable=True),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('failing_since', storage.types.UTCDateTime(), nullable=True),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('expired', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('site_push')
    op.drop_table('vote_event')
    op.drop_index('ix_vote_issue_id', table_name='vote')
    op.drop_index('ix_vote_tool', table_name='vote')
    op.drop_table('vote')
    with op.batch_alter_table('segment') as batch:
        batch.drop_column('reader_results')
    with op.batch_alter_table('issue') as batch:
        batch.drop_column('reader_results')
