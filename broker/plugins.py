"""Authentication and the ACL, as amqtt plugins.

The auth plugin proves who the client is (``epns.identity``) and records it on
the session; the topic plugin applies ``epns.acl`` to that identity. A refused
client's reason is recorded too, so the broker can answer with the right
CONNACK code instead of amqtt's fixed "not authorized".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action as AmqttAction
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.revocation import RevocationFile
from epns import acl, tokens
from epns.errors import IdentityError
from epns.identity import Credentials, Identity, authenticate

IDENTITY = "epns.identity"
REFUSAL = "epns.refusal"

_ACTIONS = {
    AmqttAction.SUBSCRIBE: acl.Action.SUBSCRIBE,
    AmqttAction.PUBLISH: acl.Action.PUBLISH,
    AmqttAction.RECEIVE: acl.Action.RECEIVE,
}


def identity_of(session: Session) -> Identity | None:
    """The identity the auth plugin proved for this session, if any."""
    identity: Identity | None = session.attributes.get(IDENTITY)
    return identity


def refusal_of(session: Session) -> IdentityError | None:
    """Why the auth plugin refused this session, if it did."""
    refusal: IdentityError | None = session.attributes.get(REFUSAL)
    return refusal


class FleetAuthPlugin(BaseAuthPlugin):
    """Client certificate (CN = agent id, OU = role) or server-signed token."""

    @dataclass
    class Config:
        """Injected by the broker runtime."""

        revocations: RevocationFile
        token_key: Any = None  # tokens.PublicKey | None; dacite cannot check an ABC union

    async def authenticate(self, *, session: Session) -> bool | None:
        """Record the identity or the refusal on the session."""
        config: FleetAuthPlugin.Config = self.config
        ssl_object = session.ssl_object
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        credentials = Credentials(
            client_id=session.client_id or "",
            username=session.username,
            password=session.password,
            peer_certificate_der=der,
        )
        token_key: tokens.PublicKey | None = config.token_key
        try:
            identity = authenticate(credentials, token_key=token_key,
                                    revoked=config.revocations.current, now=time.time())
        except IdentityError as exc:
            session.attributes[REFUSAL] = exc
            return False
        session.attributes[IDENTITY] = identity
        # amqtt skips offline queueing for anonymous sessions; ours never are.
        session.is_anonymous = False
        return True


class FleetTopicPlugin(BaseTopicPlugin):
    """The contract's ACL: ``epns.acl.is_allowed`` on the proven identity."""

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None,
        action: AmqttAction | None = None,
    ) -> bool | None:
        """Allow or deny; a session without a proven identity is denied."""
        if session is None or topic is None or action is None:
            return False
        identity = identity_of(session)
        if identity is None:
            return False
        return acl.is_allowed(identity, _ACTIONS[action], topic)
