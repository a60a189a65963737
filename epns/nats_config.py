"""The fleet's NATS accounts block: the wire contract as NATS users and permissions.

NATS maps a verified client certificate to a user by its subject
(``verify_and_map``), so each agent is one user named after its certificate
subject, and the server one more. The permissions mirror ``epns.acl``: NATS
sees MQTT topics as subjects, ``/`` becoming ``.``. nats-server 2.9 refuses an
MQTT topic with a ``.`` in it, so agent ids with a dot cannot use a NATS
cluster; ``render_accounts`` refuses them rather than write a config that
locks them out. See docs/scale-out.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from epns.errors import ConfigError
from epns.identity import AGENT_OU, SERVER_OU
from epns.pki import SERVER_CLIENT_NAME
from epns.topics import check_name

__all__ = ["ACCOUNT", "render_accounts"]

ACCOUNT = "EPNS"

# nats-server delivers a QoS 1 subscription from a JetStream consumer to an
# inbox it subscribes for the client, checked against the client's permissions.
_MQTT_INBOX = "$MQTT.sub.>"
_AGENT_SUBSCRIBES = ("epns.v1.all.cmd", "epns.v1.groups.*.cmd", _MQTT_INBOX)
_SERVER_PUBLISHES = ("epns.v1.agents.*.cmd", "epns.v1.all.cmd", "epns.v1.groups.*.cmd")
_SERVER_SUBSCRIBES = ("epns.v1.agents.*.evt", "epns.v1.agents.*.presence", _MQTT_INBOX)


def certificate_user(name: str, organizational_unit: str) -> str:
    """The user name ``verify_and_map`` derives from one of our client
    certificates: its subject in RFC 2253 order (last attribute first)."""
    return f"OU={organizational_unit},CN={name}"


def _user(name: str, publish: Iterable[str], subscribe: Iterable[str]) -> dict[str, object]:
    return {
        "user": name,
        "permissions": {"publish": {"allow": list(publish)},
                        "subscribe": {"allow": list(subscribe)}},
        # Only over MQTT: the NATS client port never accepts these names.
        "allowed_connection_types": ["MQTT"],
    }


def agent_user(agent_id: str) -> dict[str, object]:
    """One agent: its own cmd and the fan-out topics in, its evt and presence out."""
    check_name(agent_id)
    if "." in agent_id:
        raise ConfigError(f"agent id {agent_id!r} has a '.', which nats-server 2.9 refuses "
                          "in MQTT topics")
    own = f"epns.v1.agents.{agent_id}"
    return _user(certificate_user(agent_id, AGENT_OU),
                 publish=(f"{own}.evt", f"{own}.presence"),
                 subscribe=(f"{own}.cmd", *_AGENT_SUBSCRIBES))


def server_user(name: str = SERVER_CLIENT_NAME) -> dict[str, object]:
    """The management server: commands out, every agent's events and presence in."""
    return _user(certificate_user(name, SERVER_OU), _SERVER_PUBLISHES, _SERVER_SUBSCRIBES)


def render_accounts(agent_ids: Iterable[str], *, server: str = SERVER_CLIENT_NAME,
                    account: str = ACCOUNT) -> str:
    """The ``accounts { ... }`` block for nats-server.conf (JSON is valid NATS
    config syntax); one JetStream-enabled account holds the whole fleet, since
    MQTT sessions and retained messages live in the account's JetStream."""
    users = [server_user(server), *(agent_user(a) for a in sorted(set(agent_ids)))]
    block = {account: {"jetstream": "enabled", "users": users}}
    return "accounts " + json.dumps(block, indent=2) + "\n"
