"""What every scenario of the suite shares: PKI, work directory, CPU pinning,
the Mosquitto binary, and how a broker of either kind is started."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.brokers import Broker, start_epns, start_mosquitto


@dataclass(frozen=True)
class SuiteEnv:
    """Settings of one suite run."""

    pki_dir: Path
    work: Path
    mosquitto: str
    quick: bool
    # The broker on one CPU, load generators and publisher on the other.
    broker_cpu: int | None
    helper_cpu: int | None

    def start_broker(self, kind: str, work: Path, *, port: int = 0, lift_admission: bool = True,
                     log_name: str | None = None) -> Broker:
        """A fresh broker of ``kind`` ("epns" or "mosquitto") on ``port`` (0: any)."""
        work.mkdir(parents=True, exist_ok=True)
        if kind == "epns":
            return start_epns(self.pki_dir, work, self.broker_cpu, port=port,
                              lift_admission=lift_admission,
                              log_name=log_name or "epns-broker.log")
        return start_mosquitto(self.pki_dir, work, self.broker_cpu, self.mosquitto,
                               port=port or None, log_name=log_name or "mosquitto.log")
