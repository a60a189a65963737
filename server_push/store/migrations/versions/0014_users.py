"""users: role, disabled_at, created_by

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 01:55:00.000000

Several console users, made, disabled and deleted by an admin (issue 18).
The users of before (the first admin) become admins; roles other than admin
come later.
"""

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=16), nullable=False,
                                      server_default='admin'))
        batch_op.add_column(sa.Column('disabled_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('created_by', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('created_by')
        batch_op.drop_column('disabled_at')
        batch_op.drop_column('role')
