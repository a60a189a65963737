"""The suite's PNG plots: receive-latency distributions, connect time against
N, the reconnect-storm timeline. Drawn with matplotlib (``pip install
.[bench]``) without a display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use(): the backend is chosen first

COLOURS = {"epns": "tab:blue", "mosquitto": "tab:orange"}
LATENCY_PANELS = (("fanout", "one wake-all"), ("per_agent", "N per-agent wake-ups"),
                  ("one_to_one", "1:1 stream"), ("end_to_end", "end-to-end (sync POST)"))


def _scenario(results: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((r for r in results if r["scenario"] == name), None)


def receive_latency(results: list[dict[str, Any]], out: Path, subtitle: str) -> Path | None:
    """Cumulative distributions of receive latency, one panel per scenario."""
    panels = [(title, r) for name, title in LATENCY_PANELS
              if (r := _scenario(results, name)) and any(r["samples"].values())]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (title, result) in zip(axes[0], panels, strict=True):
        for broker, samples in result["samples"].items():
            if not samples:
                continue
            ordered = sorted(s * 1000 for s in samples)
            fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
            ax.step(ordered, fractions, where="post", color=COLOURS.get(broker),
                    label=f"{broker} (n={len(ordered):,})")
        ax.set_xscale("log")
        ax.set_xlabel("receive latency (ms, log scale)")
        ax.set_ylabel("fraction received")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.axhline(0.99, color="grey", linestyle=":", linewidth=1)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Receive latency (CDF; dotted line = p99). {subtitle}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def connect_time(raws: list[dict[str, Any]], out: Path, subtitle: str) -> Path | None:
    """Time to connect + subscribe all N, and connects per broker CPU-second, against N."""
    ok = [r for r in raws if r.get("all_connected")]
    if not ok:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for broker in sorted({r["broker"] for r in ok}):
        runs = sorted((r for r in ok if r["broker"] == broker), key=lambda r: r["n"])
        sizes = [r["n"] for r in runs]
        left.plot(sizes, [r["time_to_connect_s"] for r in runs], marker="o",
                  color=COLOURS.get(broker), label=broker)
        right.plot(sizes, [r["connects_per_broker_cpu_s"] for r in runs], marker="o",
                   color=COLOURS.get(broker), label=broker)
    left.set_xlabel("N agents")
    left.set_ylabel("time to connect + subscribe all (s)")
    left.set_title("Connect time against N")
    right.set_xlabel("N agents")
    right.set_ylabel("connects + subscribes per broker CPU-s")
    right.set_title("Broker cost per connect")
    right.set_ylim(bottom=0)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(subtitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def storm_timeline(results: list[dict[str, Any]], out: Path, subtitle: str) -> Path | None:
    """Agents back against time since the broker's SIGTERM, and the new broker's RSS."""
    storm = _scenario(results, "storm")
    if storm is None or not any(storm["samples"].values()):
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.4), sharex=True)
    for broker, back in storm["samples"].items():
        if not back:
            continue
        ordered = sorted(back)
        top.step([0.0, *ordered], range(len(ordered) + 1), where="post",
                 color=COLOURS.get(broker), label=f"{broker}: agents back")
        extra = storm["extra"].get(broker, {})
        if extra.get("ready_s") is not None:
            top.axvline(extra["ready_s"], color=COLOURS.get(broker), linestyle="--",
                        linewidth=1, label=f"{broker}: new broker ready")
        timeline = extra.get("rss_timeline") or []
        if timeline:
            bottom.plot([t for t, _ in timeline], [kib / 1024 for _, kib in timeline],
                        color=COLOURS.get(broker), label=f"{broker}: new broker RSS")
    top.set_ylabel("agents connected again")
    top.set_title("Reconnect storm: broker restarted under N agents (agent Backoff)")
    bottom.set_xlabel("seconds since SIGTERM to the old broker")
    bottom.set_ylabel("RSS (MiB)")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(subtitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
