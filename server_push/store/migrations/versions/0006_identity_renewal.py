"""agents: the identity's validity and its renewals

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 22:40:00.000000

Agents renew their certificate or token over the sync channel (issue 16):
each row keeps its current identity's issue and expiry time, when it last
renewed and how often. The server never stored the certificates and tokens
it issued, so existing rows cannot be back-filled here: their expiry is
NULL, meaning "not known yet", until the agent's next sync (the server
reads it from the certificate or token the agent proves itself with) or
its first renewal.
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('identity_issued_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('identity_expires_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('renewed_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('renewals', sa.Integer(), server_default='0',
                                      nullable=False))
        batch_op.create_index('ix_agents_identity_expires_at', ['identity_expires_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index('ix_agents_identity_expires_at')
        batch_op.drop_column('renewals')
        batch_op.drop_column('renewed_at')
        batch_op.drop_column('identity_expires_at')
        batch_op.drop_column('identity_issued_at')
