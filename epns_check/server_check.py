"""``epns-check --server``, on the broker's host: are the listeners up, the
certificates valid for a while yet, the metrics answering, the server's
database and broker link healthy?

Settings are read as ``epns-server`` reads them (``server.toml`` and
``EPNS_SERVER_*``), and the embedded broker's as it reads them (its config
file and ``EPNS_BROKER_*``). With an external broker (``[broker] enabled =
false``) only its listener at ``[mqtt] host:port`` is checked.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509

from epns import pki, tls
from epns.broker_config import BrokerSettings, load_broker_settings
from epns.errors import EPNSError
from epns.server_config import ServerSettings, load_server_settings
from epns_check import diagnose, probes
from epns_check.report import Finding, Report, Result, Status, Step, decide_server, passed
from epns_check.server_api import root_cause

TIMEOUT = 5.0
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - mapped away


@dataclass(frozen=True, slots=True)
class Listener:
    """A broker listener to check: its name and where this host reaches it."""

    name: str
    host: str
    port: int


def local(host: str) -> str:
    """Where to reach a listener bound to ``host`` from this machine."""
    return _WILDCARDS.get(host, host)


class ServerCheck:
    """One run of the server-side steps."""

    def __init__(self, config: Path | None, broker_config: Path | None,
                 env: Mapping[str, str]) -> None:
        self._config = config
        self._broker_config = broker_config
        self._env = env
        self.results: list[Result] = []

    def _add(self, step: Step, subject: str, finding: Finding, started: float) -> None:
        self.results.append(Result(step, subject, finding, time.monotonic() - started))

    def run(self) -> Report:
        """Every step; the report with its verdict."""
        started = time.monotonic()
        try:
            server = load_server_settings(self._config, self._env)
            broker = self._broker(server)
        except EPNSError as exc:
            self._add(Step.CONFIG, str(self._config or "defaults"),
                      Finding(Status.FAIL, str(exc), "fix the file or variable it names"),
                      started)
            return self._report()
        self._add(Step.CONFIG, str(self._config or "defaults"), passed(
            f"server on :{server.http.port}, database {server.database.url.split(':')[0]}, "
            f"broker {'embedded' if broker else 'external'}"), started)
        ca = server.pki.dir / pki.CA_CERT
        for listener in self._listeners(server, broker):
            self._listener(listener, broker.tls.ca if broker else server.mqtt.ca)
        self._certificates(server, broker, ca)
        if broker is not None and broker.metrics.enabled:
            self._metrics(broker)
        self._health(server, ca)
        return self._report()

    def _report(self) -> Report:
        return Report("epns-check --server", tuple(self.results), decide_server(self.results))

    def _broker(self, server: ServerSettings) -> BrokerSettings | None:
        if self._broker_config is None and not server.broker.enabled:
            return None
        return load_broker_settings(self._broker_config or server.broker.config, self._env)

    @staticmethod
    def _listeners(server: ServerSettings, broker: BrokerSettings | None) -> list[Listener]:
        if broker is None:
            return [Listener("broker", server.mqtt.host, server.mqtt.port)]
        return [Listener(name, local(item.host), item.port)
                for name, item in broker.listeners.enabled().items()]

    # --- listeners -------------------------------------------------------------

    def _listener(self, listener: Listener, ca: Path) -> None:
        where = f"{listener.host}:{listener.port}"
        started = time.monotonic()
        try:
            # The name agents use may not be this host's: the chain is what counts here.
            context = tls.client_context(ca, check_hostname=False)
            sock = probes.handshake(probes.tcp(listener.host, listener.port, TIMEOUT), context,
                                    listener.host, TIMEOUT)
        except EPNSError as exc:
            self._add(Step.LISTENER, listener.name, Finding(Status.FAIL, str(exc),
                                                            "fix tls.ca"), started)
            return
        except OSError as exc:
            self._add(Step.LISTENER, listener.name,
                      diagnose.listener_failure(exc, listener.name, where, TIMEOUT), started)
            return
        with sock:
            version = sock.version() or "TLS"
        self._add(Step.LISTENER, listener.name, diagnose.listener_up(listener.name, where,
                                                                      version), started)

    # --- certificates ------------------------------------------------------------

    def _certificates(self, server: ServerSettings, broker: BrokerSettings | None,
                      ca: Path) -> None:
        files = {ca: "fleet CA"}
        if broker is not None:
            files.setdefault(broker.tls.cert, "broker certificate")
        files.setdefault(server.http.cert, "HTTPS certificate")
        files.setdefault(server.mqtt.cert, "server's MQTT client certificate")
        for path, what in files.items():
            self._certificate(path, what)

    def _certificate(self, path: Path, what: str) -> None:
        started = time.monotonic()
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            self._add(Step.CERTIFICATE, str(path), Finding(
                Status.FAIL, f"{what} {path} cannot be read: {exc}",
                "fix the path in the config, or create the PKI (epns-certs init)"), started)
            return
        renew = ("renew it: delete it and its key, run epns-certs init --dir "
                 f"{path.parent} (or your CA's process), restart the broker and the server")
        self._add(Step.CERTIFICATE, str(path), diagnose.certificate_file(
            what, str(path), cert.not_valid_after_utc, probes.utc_now(), renew=renew), started)

    # --- metrics and health --------------------------------------------------------

    def _metrics(self, broker: BrokerSettings) -> None:
        url = f"http://{local(broker.metrics.host)}:{broker.metrics.port}/metrics"
        started = time.monotonic()
        try:
            response = httpx.get(url, timeout=TIMEOUT, trust_env=False)
        except httpx.HTTPError as exc:
            self._add(Step.METRICS, url, diagnose.metrics_failure(root_cause(exc), url), started)
            return
        self._add(Step.METRICS, url, diagnose.metrics_answer(response.text, url), started)

    def _health(self, server: ServerSettings, ca: Path) -> None:
        url = f"https://{local(server.http.host)}:{server.http.port}/api/v1/health"
        started = time.monotonic()
        try:
            context = tls.client_context(ca, check_hostname=False)
            response = httpx.get(url, verify=context, timeout=TIMEOUT, trust_env=False)
            data = response.json()
        except EPNSError as exc:
            self._add(Step.HEALTH, url, Finding(Status.FAIL, str(exc), "fix [pki] dir"), started)
            return
        except (httpx.HTTPError, ValueError) as exc:
            self._add(Step.HEALTH, url, diagnose.health_failure(root_cause(exc), url), started)
            return
        self._add(Step.HEALTH, url, diagnose.health_answer(
            response.status_code, data if isinstance(data, dict) else {}, url), started)
