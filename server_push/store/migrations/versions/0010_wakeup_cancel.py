"""wakeups: cancelled_at, cancelled_by; wake_targets: presence at request

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 01:20:00.000000

A wake-up can be cancelled (POST /api/v1/wakeups/{id}/cancel): who did it and
when. Each target keeps the agent's presence when it was requested, so the
console can say a target waits because its agent was offline (issue 20).
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('wakeups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cancelled_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('cancelled_by', sa.String(length=128), nullable=True))
    with op.batch_alter_table('wake_targets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('presence', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('wake_targets', schema=None) as batch_op:
        batch_op.drop_column('presence')
    with op.batch_alter_table('wakeups', schema=None) as batch_op:
        batch_op.drop_column('cancelled_by')
        batch_op.drop_column('cancelled_at')
