"""Reusable enrolment tokens, their enrolments, and each agent's machine

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 22:40:00.000000

enrol_tokens gains max_uses (1 for the tokens made before: one-time), uses,
approval and revoked_at/by; every use is a row of the new enrolments table
(pending, enrolled, rejected, expired). A token used before this revision
keeps uses = 1 and gets its enrolment row, so it lists the agent it enrolled
and enrols no other; an unused one keeps working, once. agents gains the
machine fingerprint of an enrolled agent (epns.machine).
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('enrol_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_uses', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('uses', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('approval', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('revoked_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('revoked_by', sa.String(length=128), nullable=True))
    op.create_table('enrolments',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('token_id', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.Column('requested_id', sa.String(length=64), nullable=False),
    sa.Column('explicit_id', sa.Boolean(), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=True),
    sa.Column('machine', sa.String(length=64), nullable=True),
    sa.Column('address', sa.String(length=45), nullable=True),
    sa.Column('agent_id', sa.String(length=64), nullable=True),
    sa.Column('csr', sa.Text(), nullable=True),
    sa.Column('cert', sa.Text(), nullable=True),
    sa.Column('secret_hash', sa.String(length=64), nullable=True),
    sa.Column('decided_at', sa.Float(), nullable=True),
    sa.Column('decided_by', sa.String(length=128), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.create_index('ix_enrolments_token_at', ['token_id', 'created_at'],
                              unique=False)
        batch_op.create_index('ix_enrolments_state_expires', ['state', 'expires_at'],
                              unique=False)
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('machine', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_agents_machine', ['machine'], unique=False)
    # The one-time tokens made before: one use each, spent if used.
    op.execute("UPDATE enrol_tokens SET max_uses = 1")
    op.execute("UPDATE enrol_tokens SET uses = 1 WHERE used_at IS NOT NULL")
    op.execute(
        "INSERT INTO enrolments (id, token_id, state, created_at, expires_at, requested_id, "
        "explicit_id, agent_id, decided_at, detail) "
        "SELECT id, id, 'enrolled', used_at, used_at, agent_id, TRUE, agent_id, used_at, "
        "'enrolled before revision 0005' "
        "FROM enrol_tokens WHERE used_at IS NOT NULL AND agent_id IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index('ix_agents_machine')
        batch_op.drop_column('machine')
    with op.batch_alter_table('enrolments', schema=None) as batch_op:
        batch_op.drop_index('ix_enrolments_state_expires')
        batch_op.drop_index('ix_enrolments_token_at')
    op.drop_table('enrolments')
    with op.batch_alter_table('enrol_tokens', schema=None) as batch_op:
        batch_op.drop_column('revoked_by')
        batch_op.drop_column('revoked_at')
        batch_op.drop_column('approval')
        batch_op.drop_column('uses')
        batch_op.drop_column('max_uses')
