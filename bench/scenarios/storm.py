"""Scenario 5, the reconnect storm: restart the broker under N connected agents.

The broker runs with its admission control at the defaults (the epns broker
admits 1,000 new connections per second with a burst of 500 and closes the
excess before TLS; Mosquitto has none). N simulated agents connect and hold;
then the broker gets SIGTERM and a new broker process starts on the same port.
Every agent reconnects as the real agent does: after each loss or failed
attempt it waits ``agent_push.backoff.Backoff``'s next delay (full jitter,
base 1 s, cap 120 s). Measured: time from the SIGTERM until 99 % and 100 % of
the agents are back (SUBACK), the refused attempts by reason, and the new
broker's RSS (sampled every 0.25 s and its VmHWM) against the old one's
before the storm.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from bench.brokers import Broker, free_port, log_summary, scrape_epns_metrics
from bench.fleet import Fleet
from bench.procfs import proc_cpu_seconds, proc_status
from bench.suite_env import SuiteEnv

SETTLE_S = 2.0
AFTER_S = 5.0  # after everyone is back, before "RSS afterwards"


def time_to_fraction(back_after_stop: list[float], count: int, fraction: float) -> float | None:
    """Seconds after the stop until ``fraction`` of ``count`` agents were back."""
    needed = max(1, round(fraction * count + 1e-9))
    ordered = sorted(back_after_stop)
    return round(ordered[needed - 1], 3) if len(ordered) >= needed else None


def restart(env: SuiteEnv, broker: Broker, kind: str, work: Any, port: int,
            samples: list[tuple[float, int]]) -> tuple[Broker, dict[str, Any]]:
    """Stop ``broker``, start a new one on ``port``; sample the new one's RSS."""
    stopped_at = time.monotonic()
    stop = broker.stop()
    new = env.start_broker(kind, work, port=port, lift_admission=False,
                           log_name=f"{kind}-after-restart.log")
    ready_at = time.monotonic()
    samples.append((ready_at, proc_status(new.pid)["rss_kib"]))
    return new, {"stopped_at": stopped_at, "ready_at": ready_at, "old_stop": stop,
                 "restart_s": round(ready_at - stopped_at, 3)}


def run_storm(env: SuiteEnv, kind: str, count: int) -> dict[str, Any]:
    """See the module docstring."""
    work = env.work / f"storm-{kind}-{count}"
    result: dict[str, Any] = {"broker": kind, "n": count}
    port = free_port()
    try:
        broker = env.start_broker(kind, work, port=port, lift_admission=False)
    except (RuntimeError, OSError) as exc:
        result["error"] = f"broker did not start: {exc}"
        return result
    fleet: Fleet | None = None
    cap = 60.0 if env.quick else 120.0
    try:
        time.sleep(SETTLE_S)
        fleet = Fleet(port=port, count=count, pki_dir=env.pki_dir, work=work,
                      cpu=env.helper_cpu, label=f"storm-{kind}", reconnect=True)
        result["loadgen_command"] = fleet.command
        fleet.prepare()
        connected = fleet.connect()
        result["connected_before"] = connected["ok"]
        time.sleep(SETTLE_S)
        result["rss_before_kib"] = proc_status(broker.pid)["rss_kib"]
        for child in fleet.children:
            child.send(f"back {connected['ok']} {cap}")
        samples: list[tuple[float, int]] = []
        broker, timing = restart(env, broker, kind, work, port, samples)
        result.update({k: v for k, v in timing.items() if k not in ("stopped_at", "ready_at")})
        cpu_at_ready = proc_cpu_seconds(broker.pid)
        loadgen_cpu = fleet.cpu_s()
        events = []
        for child in fleet.children:
            # Sample the new broker's RSS while the agents come back.
            while True:
                try:
                    events.append(child.wait_event("back", 0.25))
                    break
                except TimeoutError:
                    samples.append((time.monotonic(), proc_status(broker.pid)["rss_kib"]))
                    if time.monotonic() - timing["stopped_at"] > cap + 30:
                        raise
        back = [t - timing["stopped_at"] for e in events for t in e["back_at"]]
        lost = [t - timing["stopped_at"] for e in events for t in e["lost_at"]]
        result.update({
            "lost": len(lost),
            "back": len(back),
            "back_after_stop_s": sorted(round(t, 3) for t in back),
            "new_broker_ready_after_stop_s": round(timing["ready_at"] - timing["stopped_at"], 3),
            "time_to_99pct_s": time_to_fraction(back, connected["ok"], 0.99),
            "time_to_100pct_s": time_to_fraction(back, connected["ok"], 1.0),
            "refused_total": sum(e["refused_total"] for e in events),
            "refused": _merge([e["refused"] for e in events]),
            "gave_up": sum(e["gave_up"] for e in events),
            "broker_cpu_storm_s": round(proc_cpu_seconds(broker.pid) - cpu_at_ready, 2),
            "loadgen_cpu_storm_s": round(fleet.cpu_s() - loadgen_cpu, 2),
        })
        time.sleep(AFTER_S)
        status = proc_status(broker.pid)
        samples.append((time.monotonic(), status["rss_kib"]))
        result["rss_after_kib"] = status["rss_kib"]
        result["rss_peak_kib"] = max(status["hwm_kib"], *(s[1] for s in samples))
        result["rss_after_vs_before"] = round(status["rss_kib"] / result["rss_before_kib"], 3)
        result["rss_timeline"] = [(round(t - timing["stopped_at"], 2), kib) for t, kib in samples]
        if kind == "epns" and broker.metrics_port is not None:
            metrics = scrape_epns_metrics(broker.metrics_port)
            result["broker_metrics"] = metrics
            result["admission_refusals"] = sum(v for k, v in metrics.items()
                                               if k.startswith("epns_broker_refusals_total"))
        fleet.end()
    except (RuntimeError, TimeoutError, OSError, ValueError, subprocess.SubprocessError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if fleet is not None:
            fleet.close()
        result["broker_stop"] = broker.stop()
        result["broker_log_summary"] = log_summary(broker)
    return result


def _merge(counters: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for counter in counters:
        for key, value in counter.items():
            merged[key] = merged.get(key, 0) + value
    return merged
