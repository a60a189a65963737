"""console_sessions: console logins held on the server

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 01:20:00.000000

The console's cookie carried the whole signed session (user and CSRF token)
and stayed valid until it aged out, logout and a password change included
(issue 18). Now it carries a random secret whose SHA-256 is a row here; the
row is deleted at logout, at a password change, by an admin, or when it is
idle or too old. Sessions from the old cookies are not carried over: every
admin logs in once after the upgrade.
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'console_sessions',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('secret_hash', sa.String(length=64), nullable=False),
        sa.Column('username', sa.String(length=64), nullable=False),
        sa.Column('csrf', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('last_seen', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.Column('source', sa.String(length=64), nullable=False),
        sa.Column('user_agent', sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('secret_hash'),
    )
    op.create_index('ix_console_sessions_username', 'console_sessions', ['username'])
    op.create_index('ix_console_sessions_expires_at', 'console_sessions', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_console_sessions_expires_at', table_name='console_sessions')
    op.drop_index('ix_console_sessions_username', table_name='console_sessions')
    op.drop_table('console_sessions')
