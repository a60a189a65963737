"""What every benchmark records and prints: the command, the machine and code,
figures formatted for markdown, and the results file."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import RESULTS, ROOT


def _first_line(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    return ((done.stdout or done.stderr).splitlines() or ["unknown"])[0].strip()


def command_line() -> str:
    """How this run was started, for the record: ``python -m bench`` is the
    one entry point, so its ``sys.argv[0]`` (the path of ``__main__.py``) is
    written as what was typed."""
    return " ".join([sys.executable, "-m", "bench", *sys.argv[1:]])


def git_describe() -> str:
    """The commit, with ``-dirty`` when the tree has uncommitted changes."""
    return _first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])


def uncommitted(*packages: str) -> list[str]:
    """``git status --porcelain`` lines under ``packages``: others may be
    editing the working tree while a benchmark runs."""
    return subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", *packages],
                          capture_output=True, text=True, check=False).stdout.splitlines()


def code_identity(*packages: str) -> dict[str, str]:
    """Which code a process is about to run: the commit, and a hash of the
    sources of ``packages``."""
    digest = hashlib.sha256()
    for path in sorted(p for package in packages for p in ROOT.glob(f"{package}/*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return {"git": git_describe(), "sources_sha256": digest.hexdigest()[:16]}


def run_record(mosquitto: str | None) -> dict[str, Any]:
    """What every results file starts with: the command, when, and the machine."""
    return {"command": command_line(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(mosquitto)}


def machine_info(mosquitto: str | None) -> dict[str, Any]:
    """What the figures were measured on, and which code ran (commit, and
    whether the tree had uncommitted changes: others may be editing it)."""
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                   .splitlines() if line.startswith("MemTotal"))
    git = git_describe()
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mib": mem_kib // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "amqtt": importlib.metadata.version("amqtt"),
        "uvloop": importlib.metadata.version("uvloop"),
        "paho_mqtt": importlib.metadata.version("paho-mqtt"),
        "git": git,
        "dirty": git.endswith("-dirty"),
        # Kept under this name: earlier result files use it.
        "uncommitted_broker_changes": uncommitted("broker", "epns", "agent_push"),
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
    }
    if mosquitto:
        info["mosquitto"] = _first_line([mosquitto, "-h"])
    return info


def machine_line(machine: dict[str, Any]) -> str:
    """The machine and versions in one sentence, for a report."""
    return (f"{machine['nproc']} CPUs ({machine['cpu_model']}), "
            f"{machine['mem_total_mib']:,} MiB RAM, Linux {machine['kernel']}; Python "
            f"{machine['python']}, amqtt {machine['amqtt']}, uvloop {machine['uvloop']}, "
            f"paho-mqtt {machine['paho_mqtt']}, {machine['openssl']}"
            + (f", {machine['mosquitto']}" if "mosquitto" in machine else "")
            + f"; git {machine['git']}")


def save_and_print(data: dict[str, Any], name: str, table: str) -> Path:
    """Write ``bench/results/<name>.json`` (with the table in it) and print the
    command, the machine, the table and the file's path."""
    data["table_markdown"] = table
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"Command: `{data['command']}`\n")
    print(f"Machine: {machine_line(data['machine'])}\n")
    print(table)
    print(f"\nResults: {out.relative_to(ROOT)}")
    return out


def fmt(value: Any, digits: int = 1) -> str:
    """A figure for a markdown table: thousands separators, "n/a" for none."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(a: Any, b: Any) -> str:
    """``a / b`` as "1.23x" for a table, "n/a" when either is missing or b is 0."""
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def mib(kib: Any) -> float | None:
    """KiB to MiB, None when not measured."""
    return kib / 1024 if isinstance(kib, int | float) else None


def percentiles_ms(values: list[float], quantiles: tuple[float, ...] = (0.50, 0.90, 0.99),
                   digits: int = 2) -> dict[str, float] | None:
    """``quantiles`` (nearest rank) and the max of durations in seconds, in
    milliseconds rounded to ``digits``, keyed p50, p90, ..., max; None if
    there are none."""
    if not values:
        return None
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    picked = [(f"p{round(q * 100)}", rank(q)) for q in quantiles] + [("max", ordered[-1])]
    return {k: round(v * 1000, digits) for k, v in picked}
