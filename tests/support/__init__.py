"""Helpers shared by the integration tests: processes, PKI and MQTT clients."""
