"""Stock amqtt 0.12.1 with epns's authentication and ACL, and nothing else.

The defect tests run against it to prove that each behaviour of ``broker/``
is needed: a test marked ``stock_amqtt_defect`` must fail here (strict
xfail). The broker no longer uses amqtt; the two plugins below are the thin
adapters that let stock amqtt ask ``epns.identity`` and ``epns.acl`` what the
broker asks, so the baseline differs from the broker in amqtt's own
behaviour only.
Run as ``python -m tests.support.stock_amqtt PORT PKI_DIR MAX_CONNECTIONS``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action as AmqttAction
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.revocation import RevocationFile
from epns import acl, pki
from epns.errors import IdentityError
from epns.identity import Credentials, authenticate

_IDENTITY = "epns.identity"
_ACTIONS = {
    AmqttAction.SUBSCRIBE: acl.Action.SUBSCRIBE,
    AmqttAction.PUBLISH: acl.Action.PUBLISH,
    AmqttAction.RECEIVE: acl.Action.RECEIVE,
}


class AuthPlugin(BaseAuthPlugin):
    """Client certificate or server-signed token, as the broker checks them."""

    @dataclass
    class Config:
        revocations: RevocationFile
        token_key: Any = None

    async def authenticate(self, *, session: Session) -> bool | None:
        config: AuthPlugin.Config = self.config
        ssl_object = session.ssl_object
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        credentials = Credentials(session.client_id or "", session.username, session.password,
                                  der)
        try:
            identity = authenticate(credentials, token_key=config.token_key,
                                    revoked=config.revocations.current, now=time.time())
        except IdentityError:
            return False
        session.attributes[_IDENTITY] = identity
        session.is_anonymous = False
        return True


class TopicPlugin(BaseTopicPlugin):
    """The wire contract's ACL on the proven identity."""

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: AmqttAction | None = None) -> bool | None:
        if session is None or topic is None or action is None:
            return False
        identity = session.attributes.get(_IDENTITY)
        return identity is not None and acl.is_allowed(identity, _ACTIONS[action], topic)


async def serve(port: int, pki_dir: Path, max_connections: int) -> None:
    config = {
        "listeners": {
            "default": {
                "type": "tcp",
                "bind": f"127.0.0.1:{port}",
                "ssl": True,
                "certfile": str(pki_dir / "broker.crt"),
                "keyfile": str(pki_dir / "broker.key"),
                "cafile": str(pki_dir / "ca.crt"),
                "max_connections": max_connections,
            },
        },
        "plugins": {
            "tests.support.stock_amqtt.AuthPlugin": {
                "revocations": RevocationFile(pki_dir / "revoked.txt"),
                "token_key": pki.load_public_key(pki_dir / "signing.pub"),
            },
            "tests.support.stock_amqtt.TopicPlugin": {},
        },
    }
    broker = Broker(config)
    await broker.start()
    sys.stderr.write(f"stock-amqtt ready ports=primary:{port}\n")
    sys.stderr.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    port, pki_dir, max_connections = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    asyncio.run(serve(port, pki_dir, max_connections))
