"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 08:00:44.012136
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agent_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('agent_events', schema=None) as batch_op:
        batch_op.create_index('ix_agent_events_agent_at', ['agent_id', 'at'], unique=False)

    op.create_table('agents',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('groups', sa.JSON(), nullable=False),
    sa.Column('auth', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('cert_serial', sa.String(length=64), nullable=True),
    sa.Column('token_id', sa.String(length=64), nullable=True),
    sa.Column('revoked_at', sa.Float(), nullable=True),
    sa.Column('revoked_reason', sa.Text(), nullable=True),
    sa.Column('presence', sa.String(length=16), nullable=False),
    sa.Column('presence_at', sa.Float(), nullable=True),
    sa.Column('last_seen', sa.Float(), nullable=True),
    sa.Column('route', sa.String(length=64), nullable=True),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('hostname', sa.String(length=255), nullable=True),
    sa.Column('interfaces', sa.JSON(), nullable=False),
    sa.Column('last_sync_at', sa.Float(), nullable=True),
    sa.Column('last_sync_result', sa.Text(), nullable=True),
    sa.Column('last_sync_reason', sa.String(length=32), nullable=True),
    sa.Column('inventory', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('last_used', sa.Float(), nullable=True),
    sa.Column('revoked_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('audit',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('targets', sa.JSON(), nullable=False),
    sa.Column('outcome', sa.Text(), nullable=False),
    sa.Column('ref', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit', schema=None) as batch_op:
        batch_op.create_index('ix_audit_at', ['at'], unique=False)

    op.create_table('enrol_tokens',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('groups', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('used_at', sa.Float(), nullable=True),
    sa.Column('agent_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_table('pending_commands',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('topic', sa.String(length=255), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('settings',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('tasks',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('sent_at', sa.Float(), nullable=True),
    sa.Column('result_at', sa.Float(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_agent_state', ['agent_id', 'state'], unique=False)

    op.create_table('users',
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('username')
    )
    op.create_table('wakeups',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('requested_by', sa.String(length=128), nullable=False),
    sa.Column('target_kind', sa.String(length=16), nullable=False),
    sa.Column('target', sa.JSON(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=128), nullable=True),
    sa.Column('command_id', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('requested_by', 'idempotency_key')
    )
    op.create_table('wol_requests',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('requested_by', sa.String(length=128), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=True),
    sa.Column('mac', sa.String(length=17), nullable=False),
    sa.Column('sends', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('deadline', sa.Float(), nullable=False),
    sa.Column('woke_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('wake_targets',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('wakeup_id', sa.String(length=32), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('requested_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('command_id', sa.String(length=32), nullable=True),
    sa.Column('command_expires_at', sa.Float(), nullable=True),
    sa.Column('published_at', sa.Float(), nullable=True),
    sa.Column('delivered_at', sa.Float(), nullable=True),
    sa.Column('satisfied_at', sa.Float(), nullable=True),
    sa.Column('sync_id', sa.String(length=64), nullable=True),
    sa.Column('ended_at', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['wakeup_id'], ['wakeups.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('wake_targets', schema=None) as batch_op:
        batch_op.create_index('ix_wake_targets_agent_state', ['agent_id', 'state'], unique=False)
        batch_op.create_index('ix_wake_targets_command', ['command_id'], unique=False)
        batch_op.create_index('ix_wake_targets_state_expires', ['state', 'expires_at'],
                              unique=False)



def downgrade() -> None:
    with op.batch_alter_table('wake_targets', schema=None) as batch_op:
        batch_op.drop_index('ix_wake_targets_state_expires')
        batch_op.drop_index('ix_wake_targets_command')
        batch_op.drop_index('ix_wake_targets_agent_state')

    op.drop_table('wake_targets')
    op.drop_table('wol_requests')
    op.drop_table('wakeups')
    op.drop_table('users')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_agent_state')

    op.drop_table('tasks')
    op.drop_table('settings')
    op.drop_table('pending_commands')
    op.drop_table('enrol_tokens')
    with op.batch_alter_table('audit', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_at')

    op.drop_table('audit')
    op.drop_table('api_tokens')
    op.drop_table('agents')
    with op.batch_alter_table('agent_events', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_events_agent_at')

    op.drop_table('agent_events')
