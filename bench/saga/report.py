"""The checkout benchmark's tables, in Markdown (bench/RESULTS.md takes them as they are)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from cpu_groups import NOT_OURS
from floor import FLOOR
from steady_state import Figures


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def _failures(figures: Figures) -> str:
    if not figures.failed:
        return "0"
    parts = ", ".join(f"{count} {why}" for why, count in figures.failures.most_common())
    return f"{figures.failed} ({parts})"


def scenario_table(floors: Sequence[Figures], platform: Sequence[Figures]) -> str:
    """One row per scenario, each with its ceiling and the ratio to it: the platform's full rate
    against the floor (the mean of the floor runs: one before the platform and one after, so a
    drift of the machine's speed during the run weighs on both sides alike), a fixed-rate run
    against what it was offered."""
    lines = [
        "| scenario | rate | ceiling | ratio | p50 ms | p95 ms | p99 ms | failed "
        "| CPU ms / checkout |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    floor_rate = sum(f.rate for f in floors) / len(floors) if floors else 0.0
    floor_label = "floor" if len(floors) < 2 else f"floor, mean of {len(floors)}"
    for figures in [*floors, *platform]:
        if figures in floors:
            ceiling, ratio = "-", "-"
        elif figures.offered_per_second is None and floors:
            ceiling = f"{floor_rate:,.1f}/s ({floor_label})"
            ratio = f"{figures.rate / floor_rate:.0%}" if floor_rate else "-"
        elif figures.offered_per_second is not None:
            ceiling = f"{figures.offered_per_second:,.1f}/s offered"
            ratio = f"{figures.rate / figures.offered_per_second:.0%}"
        else:
            ceiling, ratio = "-", "-"
        lines.append(
            f"| {figures.name} | {figures.rate:,.1f} {figures.unit} | {ceiling} | {ratio} "
            f"| {_ms(figures.percentile(50))} | {_ms(figures.percentile(95))} "
            f"| {_ms(figures.percentile(99))} | {_failures(figures)} "
            f"| {figures.cpu_ms.get('ours', float('nan')):,.1f} |"
        )
    return "\n".join(lines)


def cpu_table(columns: Sequence[Figures]) -> str:
    """CPU milliseconds per completed checkout (in the window) of each process group."""
    names: list[str] = []
    for figures in columns:
        for name in figures.cpu_ms:
            if name not in names and name not in ("ours", "machine", NOT_OURS):
                names.append(name)
    lines = [
        "| process group | " + " | ".join(f.name for f in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for name in [*names, "ours", NOT_OURS, "machine"]:
        label = {
            "ours": "**all of the above**",
            "machine": "machine, every core's busy time",
        }.get(name, name)
        cells = []
        for figures in columns:
            value = figures.cpu_ms.get(name)
            cells.append("-" if value is None else f"{value:,.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def shape_line(label: str, commits: float, events: float, completed: int) -> str:
    per = max(completed, 1)
    return (
        f"- {label}: {commits / per:.1f} committed PostgreSQL transactions and "
        f"{events / per:.1f} events per completed checkout in the window"
    )


def floor_definition() -> str:
    return (
        f"The floor: {FLOOR.redis_writes} Redis write, {FLOOR.postgres_transactions} committed "
        f"PostgreSQL transactions and {FLOOR.events} events published with confirms, consumed "
        "and acked per checkout, from a minimal asyncio client (no HTTP, gRPC or service code)."
    )
