"""Scenarios 1 to 4 on one connected fleet: hold, accept, fan-out, 1:1.

For one broker and one fleet size N: start a fresh broker (admission lifted,
as in ``python -m bench hold``: the raw cost of a connect is measured), connect N
simulated agents (each subscribes to its command topic and the fan-out topic,
as a real agent does), hold them idle, and, on the fleet that carries the
wake-up scenarios:

- one "wake all" publish to ``epns/v1/all/cmd``: receive latency at every agent;
- one publish to each agent's command topic: latencies, and the time from the
  first send to the last receipt;
- a steady stream of single wake-ups to random agents: latencies.

Broker CPU and RSS come from /proc; the load generator's and the publisher's
CPU are recorded beside them (they share the other core).
"""

from __future__ import annotations

import subprocess
from typing import Any

from bench import hold_phases
from bench.brokers import Broker, log_summary, scrape_epns_metrics
from bench.fleet import Fleet, publish
from bench.hold_phases import cpu_pct, rss_per_connection
from bench.procfs import Sample, others_pct, proc_cpu_seconds, proc_status
from bench.results_io import percentiles_ms
from bench.suite_env import SuiteEnv


def publish_phase(env: SuiteEnv, broker: Broker, fleet: Fleet, *, receipt: str,
                  expected: int, mode: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Tell the load generator what to expect, publish, collect the receipts."""
    child = fleet.single()
    broker_cpu, loadgen_cpu = proc_cpu_seconds(broker.pid), fleet.cpu_s()
    child.send(f"wait {receipt} {expected} {timeout + 30}")
    published = publish(port=broker.port, pki_dir=env.pki_dir, cpu=env.helper_cpu, mode=mode,
                        args=args, timeout=timeout)
    receipts = child.wait_event("receipts", timeout + 60)
    broker_cpu = proc_cpu_seconds(broker.pid) - broker_cpu
    latencies = receipts["latencies_s"]
    received = receipts["received"]
    return {
        "mode": mode, "expected": expected, "received": received,
        "published": published,
        "latencies_s": latencies,
        "latency_ms": percentiles_ms(latencies),
        # First send to last receipt: "all received within".
        "all_received_s": (round(receipts["last_at"] - published["first_sent_at"], 4)
                           if received >= expected else None),
        "broker_cpu_s": round(broker_cpu, 3),
        "broker_cpu_ms_per_delivery": round(1000 * broker_cpu / received, 4) if received else None,
        "loadgen_cpu_s": round(fleet.cpu_s() - loadgen_cpu, 3),
        "publisher_cpu_s": published["cpu_s"],
    }


def wakeup_phases(env: SuiteEnv, broker: Broker, fleet: Fleet) -> dict[str, Any]:
    """Scenarios 2 and 3 on the connected fleet."""
    count = fleet.count
    stream_total, stream_rate = (100, 20.0) if env.quick else (400, 20.0)
    phases = {
        "fanout": publish_phase(env, broker, fleet, receipt="fanout", expected=count,
                                mode="wake-all", args=[], timeout=60),
        "per_agent": publish_phase(env, broker, fleet, receipt="agent", expected=count,
                                   mode="per-agent", args=["--count", str(count)], timeout=120),
        "stream": publish_phase(env, broker, fleet, receipt="agent", expected=stream_total,
                                mode="stream",
                                args=["--count", str(count), "--total", str(stream_total),
                                      "--rate", str(stream_rate)],
                                timeout=stream_total / stream_rate + 30),
    }
    phases["stream"]["rate_per_s"] = stream_rate
    return phases


def run_fleet(env: SuiteEnv, kind: str, count: int, *, hold_s: float,
              wakeups: bool) -> dict[str, Any]:
    """One broker, one fleet of ``count`` agents; see the module docstring."""
    work = env.work / f"fleet-{kind}-{count}"
    result: dict[str, Any] = {"broker": kind, "n": count}
    try:
        broker = env.start_broker(kind, work)
    except (RuntimeError, OSError) as exc:
        result["error"] = f"broker did not start: {exc}"
        return result
    fleet: Fleet | None = None
    try:
        empty_a, empty_b = hold_phases.idle_baseline(broker.pid)
        fleet = Fleet(port=broker.port, count=count, pki_dir=env.pki_dir, work=work,
                      cpu=env.helper_cpu, label=kind)
        result["loadgen_command"] = fleet.command
        result["loadgen_processes"] = len(fleet.children)
        fleet.prepare()
        before, loadgen_cpu = Sample.take(broker.pid, *fleet.pids), fleet.cpu_s()
        connected = fleet.connect()
        after = Sample.take(broker.pid, *fleet.pids)
        result["loadgen_connect_cpu_s"] = round(fleet.cpu_s() - loadgen_cpu, 2)
        hold_a, hold_b = hold_phases.hold(broker.pid, fleet.pids, hold_s)
        ok = connected["ok"]
        connect_cpu = after.cpu_s - before.cpu_s
        connect_time = connected["time_to_connect_all_s"] or connected["time_to_last_success_s"]
        result.update({
            "ok": ok, "failed": connected["failed"], "errors": connected["errors"],
            "all_connected": connected["time_to_connect_all_s"] is not None,
            "time_to_connect_s": connect_time,
            "broker_connect_cpu_s": round(connect_cpu, 2),
            "connects_per_broker_cpu_s": round(ok / connect_cpu, 1) if connect_cpu else None,
            "agent_latency_ms": connected["latency_ms"],
            "tls_versions": connected["tls_versions"],
            "idle_cpu_pct_no_clients": cpu_pct(empty_a, empty_b),
            "rss_before_kib": before.rss_kib,
            "rss_held_kib": hold_b.rss_kib,
            "rss_per_connection_kib": rss_per_connection(before, hold_b, ok),
            "hold_s": round(hold_b.at - hold_a.at, 2),
            "idle_cpu_pct_hold": cpu_pct(hold_a, hold_b),
            "others_cpu_pct_connect": others_pct(before, after),
            "others_cpu_pct_hold": others_pct(hold_a, hold_b),
        })
        if kind == "epns" and broker.metrics_port is not None:
            result["broker_metrics"] = scrape_epns_metrics(broker.metrics_port)
        if wakeups and ok == count and len(fleet.children) == 1:
            result["wakeups"] = wakeup_phases(env, broker, fleet)
        result["rss_hwm_kib"] = proc_status(broker.pid)["hwm_kib"]
        reports = fleet.end()
        result["hold_lost"] = sum(r["hold"]["lost"] for r in reports)
        result["loadgen_max_rss_kib"] = max(r["max_rss_kib"] for r in reports)
    except (RuntimeError, TimeoutError, OSError, ValueError, subprocess.SubprocessError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if fleet is not None:
            fleet.close()
        result["broker_stop"] = broker.stop()
        result["broker_log_summary"] = log_summary(broker)
    return result
