"""The embedded epns broker: MQTT 3.1.1 over TLS, built to hold a fleet.

``hub`` accepts and admits connections and bounds handshakes and silence;
``connection`` reads each client through the strict codec (``epns.mqtt``);
``fleet_broker`` is the core (sessions, subscriptions, retained messages,
routing), with ``access`` (authentication and the ACL), ``outbox`` (the
in-flight window and offline queue), ``routing`` (the subscription index)
and ``expiry``. MQTT over WebSocket enters the same connection object
(``websocket``, ``ws_front``); the one-port listener tells MQTT from HTTPS
(``front_door``). amqtt, which the broker was first built on, is no longer
imported here: tests run it as the stock baseline (docs/architecture.md).
"""
