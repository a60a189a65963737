"""agents: keep_awake_allowed, keep_awake (one awake agent per subnet)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 01:25:00.000000

Whether the agent allows being kept awake (its presence says so), and the
keep-awake record: the subnets it was elected to keep, the last hold or
release sent to it, and what it last reported (holding, or why not) (issue 20).
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('keep_awake_allowed', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('keep_awake', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_column('keep_awake')
        batch_op.drop_column('keep_awake_allowed')
