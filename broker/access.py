"""Who a client is, and what it may do: the broker's two questions at the door.

``authenticate`` proves the identity of a CONNECT (``epns.identity``: the
client certificate TLS verified, or a server-signed token) against the
revocation list; ``allows`` asks the ACL (the wire contract, widened by the
configured rules of ``epns.acl_rules``). Both are plain calls, made in line
by the broker: amqtt ran them as plugins, each check a task and a trip
through the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from broker.revocation import RevocationFile
from epns.acl import Action
from epns.acl_rules import AccessPolicy
from epns.errors import BadToken
from epns.identity import Credentials, Identity, authenticate
from epns.mqtt import Connect
from epns.pki import PublicKeyFile


@dataclass(frozen=True)
class Access:
    """The broker's authentication and ACL, built once from its settings."""

    revocations: RevocationFile
    # The server's public keys that verify tokens: more than one during a
    # key rotation, and re-read when the rotation rewrites the file.
    token_keys: PublicKeyFile | None
    policy: AccessPolicy

    def authenticate(self, connect: Connect, certificate: bytes | None) -> Identity:
        """The identity a CONNECT proves; raises the IdentityError that refuses it."""
        password = None
        if connect.password is not None:
            try:
                password = connect.password.decode("utf-8")
            except UnicodeDecodeError:
                raise BadToken("the password is not a token (not UTF-8)") from None
        credentials = Credentials(client_id=connect.client_id, username=connect.username,
                                  password=password, peer_certificate_der=certificate)
        keys = None if self.token_keys is None else self.token_keys.keys()
        return authenticate(credentials, token_key=keys,
                            revoked=self.revocations.current, now=time.time())

    def allows(self, identity: Identity, action: Action, topic: str) -> bool:
        """True when ``identity`` may ``action`` on ``topic`` (a filter for SUBSCRIBE)."""
        return self.policy.allows(identity, action, topic)
