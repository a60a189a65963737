"""handled_events: each broker message applied once across replicas

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 11:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('handled_events',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('topic', sa.String(length=255), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('handled_by', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('handled_events', schema=None) as batch_op:
        batch_op.create_index('ix_handled_events_at', ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('handled_events', schema=None) as batch_op:
        batch_op.drop_index('ix_handled_events_at')
    op.drop_table('handled_events')
