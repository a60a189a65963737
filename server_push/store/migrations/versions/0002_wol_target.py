"""wol requests: the target's address and subnet; indexes for tracking

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('wol_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('address', sa.String(length=45), nullable=True))
        batch_op.add_column(sa.Column('subnet', sa.String(length=49), nullable=True))
        batch_op.create_index('ix_wol_requests_agent_state', ['agent_id', 'state'], unique=False)
        batch_op.create_index('ix_wol_requests_state_deadline', ['state', 'deadline'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('wol_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_wol_requests_state_deadline')
        batch_op.drop_index('ix_wol_requests_agent_state')
        batch_op.drop_column('subnet')
        batch_op.drop_column('address')
