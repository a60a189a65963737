"""wake_targets by wake-up: an index for the per-wake-up counts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 20:10:00.000000

Every sync that satisfied a target counted its wake-up's targets by state
(is anything still pending?), and with no index on wakeup_id that scanned the
whole table: a wake-all of N agents cost O(N) per sync, O(N^2) in all, and
grew with every wake-up ever kept.
"""

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('wake_targets', schema=None) as batch_op:
        batch_op.create_index('ix_wake_targets_wakeup_state', ['wakeup_id', 'state'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('wake_targets', schema=None) as batch_op:
        batch_op.drop_index('ix_wake_targets_wakeup_state')
