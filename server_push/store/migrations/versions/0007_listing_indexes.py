"""indexes for paged, sorted and filtered lists at fleet scale

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 23:40:00.000000

GET /api/v1/agents filters and sorts by presence, last seen, route and
version (issue 20); the audit log by actor and action over time; the
wake-ups by creation time. Without these, each page of 10,000 agents (or of
a long audit log) scanned the table.
"""

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_INDEXES = (
    ('agents', 'ix_agents_presence_last_seen', ['presence', 'last_seen']),
    ('agents', 'ix_agents_last_seen', ['last_seen']),
    ('agents', 'ix_agents_route', ['route']),
    ('agents', 'ix_agents_version', ['version']),
    ('audit', 'ix_audit_actor_at', ['actor', 'at']),
    ('audit', 'ix_audit_action_at', ['action', 'at']),
    ('wakeups', 'ix_wakeups_created_at', ['created_at']),
)


def upgrade() -> None:
    for table, name, columns in _INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for table, name, _columns in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
