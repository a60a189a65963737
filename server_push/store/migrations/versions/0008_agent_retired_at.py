"""agents: retired_at, for DELETE /api/v1/agents/{id}

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 23:50:00.000000

Retiring an agent revokes its identity and keeps its row and history, with
the time it was retired; lists and totals leave it out unless asked
(issue 20).
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retired_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_column('retired_at')
