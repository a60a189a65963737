"""campaigns, campaign_runs, campaign_targets; wol_requests by creation time

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 01:30:00.000000

Wake campaigns (issue 20, docs/campaigns.md): scheduled and recurring wakes,
each run and its report per agent. The cap on wake-ups and magic packets
counts the Wake-on-LAN requests of the last interval: the index keeps that
count from scanning the table.
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'campaigns',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('targets', sa.JSON(), nullable=False),
        sa.Column('schedule', sa.JSON(), nullable=False),
        sa.Column('options', sa.JSON(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.Column('checked_until', sa.Float(), nullable=False),
        sa.Column('next_run_at', sa.Float(), nullable=True),
        sa.Column('deleted_at', sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_campaigns_next_run', 'campaigns', ['enabled', 'next_run_at'])
    op.create_table(
        'campaign_runs',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('campaign_id', sa.String(length=32), nullable=False),
        sa.Column('trigger', sa.String(length=16), nullable=False),
        sa.Column('slot', sa.Float(), nullable=False),
        sa.Column('window_end', sa.Float(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('requested_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('started_at', sa.Float(), nullable=True),
        sa.Column('finished_at', sa.Float(), nullable=True),
        sa.Column('claimed_by', sa.String(length=128), nullable=True),
        sa.Column('lease_until', sa.Float(), nullable=True),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('campaign_id', 'slot', 'trigger'),
    )
    op.create_index('ix_campaign_runs_state', 'campaign_runs', ['state'])
    op.create_index('ix_campaign_runs_campaign_slot', 'campaign_runs', ['campaign_id', 'slot'])
    op.create_table(
        'campaign_targets',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('agent_id', sa.String(length=64), nullable=False),
        sa.Column('phase', sa.String(length=16), nullable=False),
        sa.Column('presence', sa.String(length=16), nullable=True),
        sa.Column('wol_request_id', sa.String(length=32), nullable=True),
        sa.Column('wol_sent_at', sa.Float(), nullable=True),
        sa.Column('woke_at', sa.Float(), nullable=True),
        sa.Column('wake_key', sa.String(length=64), nullable=True),
        sa.Column('wake_ttl', sa.Float(), nullable=True),
        sa.Column('wakeup_id', sa.String(length=32), nullable=True),
        sa.Column('wake_sent_at', sa.Float(), nullable=True),
        sa.Column('detail', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['campaign_runs.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('run_id', 'agent_id'),
    )
    op.create_index('ix_campaign_targets_run_phase', 'campaign_targets', ['run_id', 'phase'])
    op.create_index('ix_wol_requests_created_at', 'wol_requests', ['created_at'])


def downgrade() -> None:
    op.drop_index('ix_wol_requests_created_at', table_name='wol_requests')
    op.drop_index('ix_campaign_targets_run_phase', table_name='campaign_targets')
    op.drop_table('campaign_targets')
    op.drop_index('ix_campaign_runs_campaign_slot', table_name='campaign_runs')
    op.drop_index('ix_campaign_runs_state', table_name='campaign_runs')
    op.drop_table('campaign_runs')
    op.drop_index('ix_campaigns_next_run', table_name='campaigns')
    op.drop_table('campaigns')
