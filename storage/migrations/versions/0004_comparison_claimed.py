"""comparison.claimed: the pick reads an index of the unclaimed comparisons, not the whole history

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 20:15:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('comparison', sa.Column('claimed', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute("UPDATE comparison SET claimed = true WHERE id IN (SELECT comparison_id FROM issue_comparison)")
    op.create_index('ix_comparison_unclaimed', 'comparison', ['claimed', 'published_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_comparison_unclaimed', table_name='comparison')
    with op.batch_alter_table('comparison') as batch:
        batch.drop_column('claimed')
