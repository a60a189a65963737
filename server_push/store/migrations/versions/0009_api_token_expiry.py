"""api_tokens: expires_at, an optional end to an API token's life

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 01:10:00.000000

API tokens made in the console or with 'epns-server token create --ttl' may
expire; tokens made before have none (NULL: valid until revoked) (issue 20).
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
