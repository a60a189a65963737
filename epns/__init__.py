"""epns: the shared core of the push wake-up service.

Everything here is pure logic or thin wrappers around the standard library and
``cryptography``: configuration, topics, the ACL, identities, the signed command
envelope, TLS contexts and the development PKI. The broker, the agent and the
server import this package; it imports none of them.
"""

__version__ = "0.1.0"
