"""The suite's results in one shape, as markdown, and checked against the targets.

Every scenario becomes ``{"scenario", "title", "command", "metrics": [{"name",
"unit", "values": {broker: float | None}, "target"}], "samples": {broker:
[seconds, ...]}}`` (the end-to-end scenario returns that shape itself), so one
table writer and one plot writer serve them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.results_io import fmt, machine_line, mib, ratio

Metric = dict[str, Any]
Raw = dict[str, Any]


def metric(name: str, unit: str, runs: dict[str, Raw], get: Callable[[Raw], Any],
           target: str | None = None) -> Metric:
    """One row: ``get`` applied to each broker's raw result (None if it failed)."""
    values: dict[str, Any] = {}
    for broker, run in runs.items():
        try:
            value = get(run)
        except (KeyError, TypeError, IndexError):
            value = None
        values[broker] = value
    return {"name": name, "unit": unit, "values": values, "target": target}


def _by_broker(raws: list[Raw], n: int) -> dict[str, Raw]:
    return {r["broker"]: r for r in raws if r["n"] == n}


def _pct(value: Any, key: str) -> Any:
    return (value or {}).get(key)


def hold_scenario(raws: list[Raw], sizes: list[int], command: str) -> dict[str, Any]:
    """Scenario 1: N idle TLS agents."""
    metrics: list[Metric] = []
    for n in sizes:
        runs = _by_broker(raws, n)
        metrics += [
            metric(f"agents connected, N={n:,}", "agents", runs, lambda r: r["ok"]),
            metric(f"broker RSS with N={n:,} held", "MiB", runs,
                   lambda r: mib(r["rss_held_kib"]),
                   "<= 1 GiB (epns)" if n >= 19_000 else None),
            metric(f"broker RSS per connection, N={n:,}", "KiB", runs,
                   lambda r: r["rss_per_connection_kib"],
                   "<= 48 KiB (stretch 36), <= 3x Mosquitto" if n == 10_000 else None),
            metric(f"broker idle CPU, N={n:,} held", "% of a core", runs,
                   lambda r: r["idle_cpu_pct_hold"]),
            metric(f"broker idle CPU per 10k agents, N={n:,}", "% of a core", runs,
                   lambda r, n=n: round(r["idle_cpu_pct_hold"] * 10_000 / n, 2),
                   "<= 2 %"),
            metric(f"connections lost during hold, N={n:,}", "agents", runs,
                   lambda r: r["hold_lost"]),
            metric(f"other processes' CPU during hold (noise), N={n:,}", "% of a core", runs,
                   lambda r: r["others_cpu_pct_hold"]),
        ]
    return {"scenario": "hold", "title": "1. Hold: N idle TLS agents", "command": command,
            "metrics": metrics, "samples": {}}


def accept_scenario(raws: list[Raw], sizes: list[int], command: str) -> dict[str, Any]:
    """Scenario 4: TLS connect + subscribe."""
    metrics: list[Metric] = []
    for n in sizes:
        runs = _by_broker(raws, n)
        metrics += [
            metric(f"time to connect + subscribe all, N={n:,}", "s", runs,
                   lambda r: r["time_to_connect_s"] if r["all_connected"] else None),
            metric(f"connects+subscribes per broker CPU-second, N={n:,}", "1/CPU-s", runs,
                   lambda r: r["connects_per_broker_cpu_s"],
                   ">= 500, >= 0.4x Mosquitto"),
            metric(f"broker CPU during connect phase, N={n:,}", "CPU-s", runs,
                   lambda r: r["broker_connect_cpu_s"]),
            metric(f"load generator CPU during connect phase, N={n:,}", "CPU-s", runs,
                   lambda r: r["loadgen_connect_cpu_s"]),
            metric(f"agent connect+subscribe latency p99, N={n:,}", "ms", runs,
                   lambda r: max(p["p99"] for p in r["agent_latency_ms"])),
        ]
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[1]
        runs = {b: {"small": s, "large": _by_broker(raws, large).get(b)}
                for b, s in _by_broker(raws, small).items()}
        metrics.append(metric(
            f"time ratio t(N={large:,}) / t(N={small:,}) (linear = {large / small:g})", "x",
            runs, lambda r: round(r["large"]["time_to_connect_s"] / r["small"]["time_to_connect_s"],
                                  2),
            "<= 6 (10k vs 2k)"))
    return {"scenario": "accept", "title": "4. Accept: TLS connect + subscribe",
            "command": command, "metrics": metrics, "samples": {}}


def _wake(run: Raw, phase: str) -> Raw:
    phase_result: Raw = run["wakeups"][phase]
    return phase_result


def wakeup_scenarios(raws: list[Raw], n: int, command: str) -> list[dict[str, Any]]:
    """Scenarios 2 (one wake-all; N per-agent publishes) and 3 (1:1 stream)."""
    runs = _by_broker(raws, n)
    samples = {phase: {b: r["wakeups"][phase]["latencies_s"] for b, r in runs.items()
                       if "wakeups" in r} for phase in ("fanout", "per_agent", "stream")}

    def latency_rows(phase: str, label: str, p99_target: str | None) -> list[Metric]:
        return [metric(f"{label} receive latency {q}", "ms", runs,
                       lambda r, q=q: _pct(_wake(r, phase)["latency_ms"], q),
                       p99_target if q == "p99" else None) for q in ("p50", "p99", "max")]

    def cost_rows(phase: str) -> list[Metric]:
        return [
            metric("received / expected", "", runs,
                   lambda r: f"{_wake(r, phase)['received']:,} / {_wake(r, phase)['expected']:,}"),
            metric("broker CPU per delivery", "ms", runs,
                   lambda r: _wake(r, phase)["broker_cpu_ms_per_delivery"]),
            metric("load generator CPU", "CPU-s", runs, lambda r: _wake(r, phase)["loadgen_cpu_s"]),
            metric("publisher CPU (incl. its start)", "CPU-s", runs,
                   lambda r: _wake(r, phase)["publisher_cpu_s"]),
        ]

    fanout = [*latency_rows("fanout", f"one wake-all to N={n:,}",
                            "<= 1 s and <= 1.5x Mosquitto (10k)"),
              metric("wake-all: first send to last receipt", "s", runs,
                     lambda r: _wake(r, "fanout")["all_received_s"]),
              *cost_rows("fanout")]
    per_agent = [metric(f"{n:,} per-agent wake-ups: all received within", "s", runs,
                        lambda r: _wake(r, "per_agent")["all_received_s"],
                        "<= 2x Mosquitto (10k)"),
                 *latency_rows("per_agent", "per-agent", None), *cost_rows("per_agent")]
    stream = [metric("rate", "wake-ups/s", runs, lambda r: _wake(r, "stream")["rate_per_s"]),
              *latency_rows("stream", f"1:1 with N={n:,} connected", "<= 10 ms (10k)"),
              *cost_rows("stream")]
    return [
        {"scenario": "fanout", "title": f"2a. Fan-out: one wake-all to N={n:,}",
         "command": command, "metrics": fanout, "samples": samples["fanout"]},
        {"scenario": "per_agent", "title": f"2b. Fan-out: N={n:,} per-agent wake-ups",
         "command": command, "metrics": per_agent, "samples": samples["per_agent"]},
        {"scenario": "one_to_one", "title": f"3. 1:1 wake-ups with N={n:,} connected",
         "command": command, "metrics": stream, "samples": samples["stream"]},
    ]


def storm_scenario(raws: list[Raw], command: str) -> dict[str, Any]:
    """Scenario 5: broker restart under N agents."""
    runs = {r["broker"]: r for r in raws}
    n = raws[0]["n"] if raws else 0
    metrics = [
        metric("agents connected before the restart", "agents", runs,
               lambda r: r["connected_before"]),
        metric("new broker ready after SIGTERM", "s", runs,
               lambda r: r["new_broker_ready_after_stop_s"]),
        metric("99 % back after SIGTERM", "s", runs, lambda r: r["time_to_99pct_s"],
               "<= 20 s (10k)"),
        metric("100 % back after SIGTERM", "s", runs, lambda r: r["time_to_100pct_s"],
               "<= 45 s (10k)"),
        metric("agents back / lost", "", runs, lambda r: f"{r['back']:,} / {r['lost']:,}"),
        metric("failed reconnect attempts (all reasons)", "attempts", runs,
               lambda r: r["refused_total"]),
        metric("refused by epns admission (broker metric)", "connections", runs,
               lambda r: r.get("admission_refusals")),
        metric("broker RSS before the storm", "MiB", runs, lambda r: mib(r["rss_before_kib"])),
        metric("new broker peak RSS", "MiB", runs, lambda r: mib(r["rss_peak_kib"])),
        metric("new broker RSS 5 s after all back", "MiB", runs,
               lambda r: mib(r["rss_after_kib"])),
        metric("RSS after / before", "x", runs, lambda r: r["rss_after_vs_before"],
               "within 10 %"),
        metric("new broker CPU until all back", "CPU-s", runs, lambda r: r["broker_cpu_storm_s"]),
        metric("load generator CPU until all back", "CPU-s", runs,
               lambda r: r["loadgen_cpu_storm_s"]),
    ]
    samples = {b: r.get("back_after_stop_s", []) for b, r in runs.items()}
    return {"scenario": "storm", "title": f"5. Storm: broker restart with N={n:,} agents",
            "command": command, "metrics": metrics, "samples": samples,
            "extra": {b: {"ready_s": r.get("new_broker_ready_after_stop_s"),
                          "rss_timeline": r.get("rss_timeline", [])} for b, r in runs.items()}}


def agent_scenario(data: Raw, command: str) -> dict[str, Any]:
    """Scenario 7: one real agent, idle."""
    runs = {r["broker"]: r for r in data.get("runs", [])}
    metrics = [
        metric("idle window", "s", runs, lambda r: r["window_s"]),
        metric("agent RSS, max in window", "MiB", runs, lambda r: mib(r["rss_max_kib"]),
               "<= 40 MB (38.1 MiB)"),
        metric("agent CPU in window", "% of a core", runs, lambda r: r["sched_cpu_pct"]),
        metric("bytes on the socket per hour, both directions", "B/h", runs,
               lambda r: r["bytes_total_per_hour"], "<= 3,500 B/h at keep-alive 300 s"),
        metric("keep-alive", "s", runs, lambda r: r["keepalive"]),
    ]
    return {"scenario": "agent_idle", "title": "7. Agent: the real epns-agent, idle",
            "command": command, "metrics": metrics, "samples": {},
            "results_file": data.get("results_file"), "error": data.get("error")}


# -- markdown ---------------------------------------------------------------

def scenario_table(result: dict[str, Any], brokers: list[str]) -> str:
    """One scenario as a markdown table, epns / Mosquitto ratio last."""
    header = ["metric", "unit", *brokers]
    pair = len(brokers) == 2
    if pair:
        header.append(f"{brokers[0]}/{brokers[1]}")
    header.append("target")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["metrics"]:
        values = [row["values"].get(b) for b in brokers]
        cells = [row["name"], row["unit"], *[fmt(v, 2) for v in values]]
        if pair:
            numeric = all(isinstance(v, int | float) for v in values)
            cells.append(ratio(values[0], values[1]) if numeric else "")
        cells.append(row["target"] or "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def find(results: list[dict[str, Any]], scenario: str, name_start: str) -> Metric | None:
    """The first metric of ``scenario`` whose name starts with ``name_start``."""
    for result in results:
        if result["scenario"] == scenario:
            for row in result["metrics"]:
                if row["name"].startswith(name_start):
                    return dict(row)
    return None


def _v(row: Metric | None, broker: str) -> Any:
    value = (row or {}).get("values", {}).get(broker)
    return value if isinstance(value, int | float) else None


def targets(results: list[dict[str, Any]], sizes: dict[str, int]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows. ``sizes`` names the N each figure was
    measured at; in quick mode that is not the target's N, and the verdict says so."""
    rows: list[tuple[str, str, str]] = []

    def add(target: str, measured: str, ok: bool | None, at_n: int, want_n: int) -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "MISSED")
        if ok is not None and at_n != want_n:
            verdict += f" (at N={at_n:,}, not {want_n:,})"
        rows.append((target, measured, verdict))

    big = sizes["load"]
    rss = find(results, "hold", f"broker RSS per connection, N={big:,}")
    e, m = _v(rss, "epns"), _v(rss, "mosquitto")
    add("RSS per idle TLS agent at 10k <= 48 KiB (stretch <= 36), <= 3x Mosquitto",
        f"{fmt(e)} KiB, {ratio(e, m)} Mosquitto ({fmt(m)} KiB)",
        None if e is None else (e <= 48 and (m is None or e <= 3 * m)), big, 10_000)
    held = find(results, "hold", "broker RSS with N=19,000 held")
    count = find(results, "hold", "agents connected, N=19,000")
    e = _v(held, "epns")
    add("19k TLS agents held by one broker process in <= 1 GiB",
        "not run" if e is None else f"{fmt(_v(count, 'epns'))} agents, {fmt(e)} MiB",
        None if e is None else (e <= 1024 and _v(count, "epns") == 19_000), 19_000, 19_000)
    rate = find(results, "accept", f"connects+subscribes per broker CPU-second, N={big:,}")
    e, m = _v(rate, "epns"), _v(rate, "mosquitto")
    add(">= 500 connects+subscribes per broker CPU-second, >= 0.4x Mosquitto",
        f"{fmt(e, 0)} ({ratio(e, m)} Mosquitto's {fmt(m, 0)})",
        None if e is None else (e >= 500 and (m is None or e >= 0.4 * m)), big, 10_000)
    scale = find(results, "accept", "time ratio")
    e = _v(scale, "epns")
    add("time to connect 10k <= 6x time for 2k", f"{fmt(e, 2)}x ({(scale or {}).get('name')})",
        None if e is None else e <= 6, sizes["accept_large"], 10_000)
    p99 = next((r for r in _rows(results, "fanout") if r["name"].endswith("latency p99")), None)
    e, m = _v(p99, "epns"), _v(p99, "mosquitto")
    add("one wake-up to all of 10k: p99 <= 1 s and <= 1.5x Mosquitto's",
        f"p99 {fmt(e)} ms, {ratio(e, m)} Mosquitto's {fmt(m)} ms",
        None if e is None else (e <= 1000 and (m is None or e <= 1.5 * m)), big, 10_000)
    within = find(results, "per_agent", f"{big:,} per-agent wake-ups")
    e, m = _v(within, "epns"), _v(within, "mosquitto")
    add("10k per-agent wake-ups all received within 2x Mosquitto's time",
        f"{fmt(e, 2)} s, {ratio(e, m)} Mosquitto's {fmt(m, 2)} s",
        None if e is None or m is None else e <= 2 * m, big, 10_000)
    one = next((r for r in _rows(results, "one_to_one") if r["name"].endswith("latency p99")),
               None)
    e = _v(one, "epns")
    add("1:1 wake-up with 10k connected: p99 <= 10 ms", f"{fmt(e, 2)} ms",
        None if e is None else e <= 10, big, 10_000)
    t99, t100 = find(results, "storm", "99 %"), find(results, "storm", "100 %")
    after = find(results, "storm", "RSS after / before")
    e99, e100, ea = _v(t99, "epns"), _v(t100, "epns"), _v(after, "epns")
    add("storm, 10k: 99 % back <= 20 s, 100 % <= 45 s, RSS within 10 % of pre-storm",
        f"99 % in {fmt(e99, 2)} s, 100 % in {fmt(e100, 2)} s, RSS after/before {fmt(ea, 3)}",
        None if None in (e99, e100, ea) else (e99 <= 20 and e100 <= 45 and abs(ea - 1) <= 0.10),
        sizes["storm"], 10_000)
    rss_a = find(results, "agent_idle", "agent RSS")
    bytes_h = find(results, "agent_idle", "bytes on the socket")
    window = find(results, "agent_idle", "idle window")
    ra, ba = _v(rss_a, "epns"), _v(bytes_h, "epns")
    rows.append(("idle agent: RSS <= 40 MB, <= 3.5 KB/h on the wire at keep-alive 300 s",
                 f"{fmt(ra)} MiB, {fmt(ba, 0)} B/h (window {fmt(_v(window, 'epns'), 0)} s)",
                 "n/a" if ra is None or ba is None else
                 ("met" if ra * 1024 * 1024 <= 40e6 and ba <= 3500 else "MISSED")
                 + ("" if (_v(window, "epns") or 0) >= 300 else
                    " (window shorter than keep-alive: no ping in it)")))
    idle = find(results, "hold", f"broker idle CPU per 10k agents, N={big:,}")
    e = _v(idle, "epns")
    add("idle broker <= 2 % of one core per 10k agents", f"{fmt(e, 2)} %",
        None if e is None else e <= 2, big, 10_000)
    # The headline rows only: p50/p99 to "satisfied" and the time to all satisfied.
    e2e = [r for r in _rows(results, "end_to_end") if "satisfied" in r["name"]
           and (r["name"].endswith(("p50", "p99")) or "time to all" in r["name"])]
    rows.append(("end-to-end (scenario 6): p50/p99, time to all satisfied (no numeric target)",
                 "; ".join(f"{r['name']}: {fmt(_v(r, 'epns'), 2)} {r['unit']}" for r in e2e)
                 or "not available", "reported" if e2e else "n/a"))
    return rows


def _rows(results: list[dict[str, Any]], scenario: str) -> list[Metric]:
    return [row for r in results if r["scenario"] == scenario for row in r["metrics"]]


def targets_table(rows: list[tuple[str, str, str]]) -> str:
    """The targets as markdown."""
    lines = ["| target | measured (epns) | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in rows]
    return "\n".join(lines)


def readme_block(data: dict[str, Any], plots: list[str]) -> str:
    """Everything between the suite markers in bench/README.md."""
    machine = data["machine"]
    parts = [
        f"Run `{data['name']}`, started {data['started']}, wall time "
        f"{data['wall_s'] / 60:.1f} min. Command: `{data['command']}`",
        "",
        f"Machine: {machine_line(machine)}; uncommitted changes in the tree: "
        f"{'yes' if machine['dirty'] else 'no'}"
        + (f" (under broker/, epns/, agent_push/: {len(machine['uncommitted_broker_changes'])}"
           " files)" if machine["uncommitted_broker_changes"] else ""),
        "",
        "#### Targets",
        "",
        targets_table(data["targets"]),
    ]
    for result in data["scenarios"]:
        parts += ["", f"#### {result['title']}", ""]
        if result.get("error"):
            parts.append(f"Not available: {result['error']}")
            continue
        parts.append(scenario_table(result, data["brokers"]))
    for note in data.get("notes", []):
        parts += ["", note]
    if plots:
        parts += ["", *[f"![{p}](plots/{p})" for p in plots]]
    return "\n".join(parts)
