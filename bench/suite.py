"""The benchmark suite (issue 6): every scenario, epns broker and Mosquitto, one command.

    python -m bench suite --quick   # a few minutes: N = 500 / 2,000
    python -m bench suite           # full, under 30 minutes

Scenarios (``--scenarios``; all by default), each against both brokers
(``--brokers``) in the same run, with the same certificates, ACL and load
generator, ratios computed within the run:

- ``hold`` (1): N idle TLS agents, N = 2k, 10k, 19k (quick 500, 2k): broker RSS
  per connection, idle CPU;
- ``accept`` (4): the same runs' connect phase, 2k and 10k: connects +
  subscribes per broker CPU-second, time ratio;
- ``wakeups`` (2, 3): on the 10k fleet (quick 2k): one wake-all, N per-agent
  wake-ups, a steady 1:1 stream;
- ``storm`` (5): broker restart under 10k agents (quick 2k), admission at
  its defaults, agents reconnecting with the agent's Backoff;
- ``end_to_end`` (6): ``bench.scenarios.end_to_end``;
- ``agent`` (7): ``python -m bench agent-idle``, 600 s windows (quick 120 s),
  run in the background during the others.

Writes ``bench/results/suite-<timestamp>.json``, PNG plots in ``bench/plots/``
and the block between ``<!-- suite:start -->`` and ``<!-- suite:end -->`` in
``bench/README.md`` (``--no-readme`` leaves it). Loopback only; every process
is stopped at the end, also on error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench import BENCH, plots
from bench import suite_report as report
from bench.bench_pki import DEFAULT_DIR, ensure_bench_pki
from bench.brokers import MOSQUITTO
from bench.processes import can_pin, raise_nofile_limit
from bench.results_io import command_line, machine_info, save_and_print
from bench.scenarios import end_to_end
from bench.scenarios.agent import AgentIdle
from bench.scenarios.fleet import run_fleet
from bench.scenarios.storm import run_storm
from bench.suite_env import SuiteEnv

README = BENCH / "README.md"
PLOTS = BENCH / "plots"
START, END = "<!-- suite:start -->", "<!-- suite:end -->"
SCENARIOS = ("hold", "accept", "wakeups", "storm", "end_to_end", "agent")
FULL: dict[str, Any] = {"hold": [2_000, 10_000, 19_000], "accept": [2_000, 10_000],
                        "load": 10_000, "storm": 10_000, "agent_s": 600.0, "hold_s": 10.0}
QUICK: dict[str, Any] = {"hold": [500, 2_000], "accept": [500, 2_000], "load": 2_000,
                         "storm": 2_000, "agent_s": 120.0, "hold_s": 5.0}


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"suite {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def fleet_runs(env: SuiteEnv, plan: dict[str, Any], wanted: set[str],
               brokers: list[str]) -> list[dict[str, Any]]:
    """Scenarios 1 to 4: one fresh broker and fleet per broker and N."""
    sizes: set[int] = set()
    if "hold" in wanted:
        sizes.update(plan["hold"])
    if "accept" in wanted:
        sizes.update(plan["accept"])
    if "wakeups" in wanted:
        sizes.add(plan["load"])
    raws = []
    for n in sorted(sizes):
        for kind in brokers:
            log(f"fleet: {kind}, N={n:,}")
            raw = run_fleet(env, kind, n, hold_s=plan["hold_s"],
                            wakeups="wakeups" in wanted and n == plan["load"])
            log(f"  {kind} N={n:,}: {raw.get('error') or 'ok'}")
            raws.append(raw)
    return raws


def end_to_end_scenario(env: SuiteEnv, brokers: list[str]) -> dict[str, Any]:
    """Scenario 6; a failure is recorded, and the other scenarios' figures kept."""
    title = "6. End-to-end: all-in-one server, simulated agents doing the sync POST"
    try:
        result: dict[str, Any] = end_to_end.run(
            brokers=brokers, quick=env.quick, work_dir=env.work / "end-to-end",
            pki_dir=env.pki_dir)
    except Exception as exc:  # another module's failure must not lose the run
        return {"scenario": "end_to_end", "title": title, "metrics": [], "samples": {},
                "error": f"failed: {type(exc).__name__}: {exc}"}
    result.setdefault("title", title)
    return result


def build_scenarios(raw: dict[str, Any], plan: dict[str, Any], wanted: set[str],
                    command: str) -> list[dict[str, Any]]:
    """The raw results in the uniform shape, in scenario order."""
    fleet = raw.get("fleet", [])
    results: list[dict[str, Any]] = []
    if "hold" in wanted:
        results.append(report.hold_scenario(fleet, plan["hold"], command))
    if "wakeups" in wanted:
        results += report.wakeup_scenarios(fleet, plan["load"], command)
    if "accept" in wanted:
        results.append(report.accept_scenario(fleet, plan["accept"], command))
    if "storm" in wanted:
        results.append(report.storm_scenario(raw.get("storm", []), command))
    if "end_to_end" in wanted:
        results.append(raw["end_to_end"])
    if "agent" in wanted:
        results.append(report.agent_scenario(raw.get("agent", {}), command))
    return results


def draw(data: dict[str, Any], out_dir: Path) -> list[str]:
    """The PNGs; returns their file names."""
    out_dir.mkdir(exist_ok=True)
    subtitle = f"{data['name']}, git {data['machine']['git']}"
    made = [
        plots.receive_latency(data["scenarios"], out_dir / "receive-latency.png", subtitle),
        plots.connect_time(data["raw"].get("fleet", []), out_dir / "connect-time.png", subtitle),
        plots.storm_timeline(data["scenarios"], out_dir / "storm-timeline.png", subtitle),
    ]
    return [p.name for p in made if p is not None]


def rewrite_readme(block: str) -> None:
    """Replace what is between the suite markers in bench/README.md, nothing else."""
    text = README.read_text()
    if START not in text or END not in text:
        raise RuntimeError(f"{README} has no {START} ... {END} block")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    README.write_text(f"{head}{START}\n{block}\n{END}{tail}")


def parse_args(argv: list[str] | None, prog: str | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N, short windows")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--brokers", nargs="+", choices=("epns", "mosquitto"),
                        default=["epns", "mosquitto"])
    parser.add_argument("--no-readme", dest="readme", action="store_false",
                        help="do not rewrite the suite block of bench/README.md")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the broker and the load generator to separate CPUs")
    parser.add_argument("--plots-dir", type=Path, default=PLOTS)
    parser.add_argument("--pki-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/epns-bench-work"))
    parser.add_argument("--mosquitto", default=MOSQUITTO)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m bench suite``; exit status 0 when every fleet and storm run completed."""
    args = parse_args(argv, prog)
    plan = QUICK if args.quick else FULL
    wanted = set(args.scenarios)
    raise_nofile_limit()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"suite-{stamp}"
    pin = can_pin(args.pin)
    env = SuiteEnv(pki_dir=args.pki_dir, work=args.work_dir / name, mosquitto=args.mosquitto,
                   quick=args.quick, broker_cpu=0 if pin else None,
                   helper_cpu=1 if pin else None)
    env.work.mkdir(parents=True)
    log(f"PKI: {ensure_bench_pki(args.pki_dir, max(plan['hold']))}")
    command = command_line()
    started = time.monotonic()
    data: dict[str, Any] = {
        "name": name, "command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(args.mosquitto), "brokers": args.brokers,
        "settings": {"quick": args.quick, "plan": plan, "scenarios": sorted(wanted),
                     "pinned": "broker on CPU 0; load generators and publisher on CPU 1"
                     if pin else "no", "work_dir": str(env.work)},
        "raw": {},
    }
    agent: AgentIdle | None = None
    try:
        if "agent" in wanted:
            log(f"agent idle: {plan['agent_s']:g} s window per broker, in the background")
            agent = AgentIdle(duration=plan["agent_s"], brokers=args.brokers,
                              pki_dir=args.pki_dir, work=env.work / "agent-idle",
                              mosquitto=args.mosquitto)
        data["raw"]["fleet"] = fleet_runs(env, plan, wanted, args.brokers)
        if "storm" in wanted:
            data["raw"]["storm"] = []
            for kind in args.brokers:
                log(f"storm: {kind}, N={plan['storm']:,}")
                data["raw"]["storm"].append(run_storm(env, kind, plan["storm"]))
        if "end_to_end" in wanted:
            log("end-to-end")
            data["raw"]["end_to_end"] = end_to_end_scenario(env, args.brokers)
        if agent is not None:
            log("waiting for the agent idle windows")
            data["raw"]["agent"] = agent.result(timeout=2 * plan["agent_s"] + 300)
    finally:
        if agent is not None:
            agent.stop()
    data["wall_s"] = round(time.monotonic() - started, 1)
    data["scenarios"] = build_scenarios(data["raw"], plan, wanted, command)
    data["targets"] = report.targets(data["scenarios"], {
        "load": plan["load"], "accept_large": plan["accept"][-1], "storm": plan["storm"]})
    data["plots"] = draw(data, args.plots_dir)
    if args.quick:
        data["notes"] = ["Quick mode: smaller N and a 120 s agent window; verdicts measured at "
                         "another N than the target's say so."]
    block = report.readme_block(data, data["plots"])
    save_and_print(data, name, block)
    if args.readme:
        rewrite_readme(block)
    errors = [r for r in data["raw"].get("fleet", []) + data["raw"].get("storm", [])
              if "error" in r]
    return 1 if errors else 0

