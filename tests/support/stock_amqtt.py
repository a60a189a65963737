"""Stock amqtt 0.12.1 with epns's auth and ACL plugins, and nothing else.

The defect tests run against it to prove that each fix in ``broker/`` is
needed: a test marked ``stock_amqtt_defect`` must fail here (strict xfail).
Run as ``python -m tests.support.stock_amqtt PORT PKI_DIR MAX_CONNECTIONS``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from amqtt.broker import Broker

from broker.revocation import RevocationFile
from epns import pki


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
            "broker.plugins.FleetAuthPlugin": {
                "revocations": RevocationFile(pki_dir / "revoked.txt"),
                "token_key": pki.load_public_key(pki_dir / "signing.pub"),
            },
            "broker.plugins.FleetTopicPlugin": {},
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
