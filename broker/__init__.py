"""The embedded epns broker: amqtt, hardened to hold a fleet.

amqtt provides the MQTT packet codec, sessions, configuration and the plugin
API. epns adds its own accept path (admission before TLS, connection limit,
CONNECT timeout, keep-alive enforcement, framing checks), indexed routing with
a bounded per-session outbox, authentication and the ACL as amqtt plugins, and
Prometheus metrics. Each override of amqtt internals names the defect it fixes.
"""
