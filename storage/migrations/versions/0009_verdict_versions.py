"""Versions of a verdict and the changes readers are told of (issue 16, item 3)

comparison.version and issue_comparison.version (what an issue carried), comparison_version (a carried
version a newer one replaced), verdict_change (a flipped or moved panel verdict, waiting for or carried by
an issue), and segment.change_ids (the changes a segment's readers get).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 18:30:00.000000
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel

import storage.types


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('comparison', sa.Column('version', sa.Integer(), server_default='1', nullable=False))
    op.add_column('issue_comparison', sa.Column('version', sa.Integer(), server_default='1', nullable=False))
    op.add_column('segment', sa.Column('change_ids', sqlmodel.sql.sqltypes.AutoString(), server_default='',
                                       nullable=False))
    op.create_table('comparison_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('comparison_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('content', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', storage.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['comparison_id'], ['comparison.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('comparison_id', 'version')
    )
    op.create_table('verdict_change',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('comparison_id', sa.Integer(), nullable=False),
    sa.Column('origin_issue_id', sa.Integer(), nullable=False),
    sa.Column('issue_id', sa.Integer(), nullable=True),
    sa.Column('tool_position', sa.Integer(), nullable=False),
    sa.Column('before_version', sa.Integer(), nullable=False),
    sa.Column('after_version', sa.Integer(), nullable=False),
    sa.Column('before_ship', sa.Integer(), nullable=False),
    sa.Column('before_skip', sa.Integer(), nullable=False),
    sa.Column('after_ship', sa.Integer(), nullable=False),
    sa.Column('after_skip', sa.Integer(), nullable=False),
    sa.Column('before_pct', sa.Integer(), nullable=True),
    sa.Column('after_pct', sa.Integer(), nullable=True),
    sa.Column('minds', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('recorded_at', storage.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['comparison_id'], ['comparison.id'], ),
    sa.ForeignKeyConstraint(['issue_id'], ['issue.id'], ),
    sa.ForeignKeyConstraint(['origin_issue_id'], ['issue.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_verdict_change_comparison_id', 'verdict_change', ['comparison_id'], unique=False)
    op.create_index('ix_verdict_change_issue_id', 'verdict_change', ['issue_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_verdict_change_issue_id', table_name='verdict_change')
    op.drop_index('ix_verdict_change_comparison_id', table_name='verdict_change')
    op.drop_table('verdict_change')
    op.drop_table('comparison_version')
    with op.batch_alter_table('segment') as batch:
        batch.drop_column('change_ids')
    with op.batch_alter_table('issue_comparison') as batch:
        batch.drop_column('version')
    with op.batch_alter_table('comparison') as batch:
        batch.drop_column('version')
