"""CPU time of chosen processes over one measurement window, read from Linux /proc.

`CpuWindow.open()` and `.close()` snapshot every process (pid, parent, command, start time, user +
system CPU); `spent(pids)` is what those processes used in between, a process born inside the
window counted from its birth. A process that exited inside the window is lost (its CPU went to
its parent's children counters, which are not read), so groups are meant for long-lived
processes: services, database backends of pooled connections, the broker.

The machine is shared: `machine_busy` is every core's busy time over the window, whoever used it,
so a reader can see how much of it the measured groups account for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcessStat:
    pid: int
    ppid: int
    command: str
    started_ticks: int
    cpu_seconds: float


def snapshot() -> dict[int, ProcessStat]:
    """Every process on the machine now (threads are included in their process's figures)."""
    stats: dict[int, ProcessStat] = {}
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, tail = path.read_text().rpartition(")")
        except OSError:
            continue  # exited while being read
        fields = tail.split()
        pid = int(head.partition(" ")[0])
        stats[pid] = ProcessStat(
            pid=pid,
            ppid=int(fields[1]),
            command=head.partition("(")[2],
            started_ticks=int(fields[19]),
            cpu_seconds=(int(fields[11]) + int(fields[12])) / _TICKS,
        )
    return stats


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat: user, nice, system, irq,
    softirq, steal)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / _TICKS


@dataclass
class CpuWindow:
    """Two snapshots of the machine's processes and the wall-clock time between them."""

    before: dict[int, ProcessStat] = field(default_factory=dict)
    after: dict[int, ProcessStat] = field(default_factory=dict)
    busy_before: float = 0.0
    busy_after: float = 0.0
    opened_at: float = 0.0
    closed_at: float = 0.0

    def open(self) -> None:
        self.opened_at = time.perf_counter()
        self.busy_before = machine_busy_seconds()
        self.before = snapshot()

    def close(self) -> None:
        self.after = snapshot()
        self.busy_after = machine_busy_seconds()
        self.closed_at = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.closed_at - self.opened_at

    @property
    def machine_busy(self) -> float:
        return self.busy_after - self.busy_before

    def spent(self, pids: Iterable[int]) -> float:
        """CPU seconds the given processes used inside the window."""
        total = 0.0
        for pid in set(pids):
            end = self.after.get(pid)
            if end is None:
                continue
            start = self.before.get(pid)
            if start is not None and start.started_ticks == end.started_ticks:
                total += end.cpu_seconds - start.cpu_seconds
            else:  # born inside the window (or its pid was reused): all of it is in the window
                total += end.cpu_seconds
        return total

    def descendants(self, roots: Iterable[int]) -> set[int]:
        """`roots` and every process below them, as the window's last snapshot shows them."""
        children: dict[int, list[int]] = {}
        for stat in self.after.values():
            children.setdefault(stat.ppid, []).append(stat.pid)
        found: set[int] = set()
        pending = list(roots)
        while pending:
            pid = pending.pop()
            if pid in found:
                continue
            found.add(pid)
            pending.extend(children.get(pid, ()))
        return found

    def by_command(self, *commands: str) -> set[int]:
        """Processes whose command name is one of `commands`, with everything below them."""
        roots = [s.pid for s in self.after.values() if s.command in commands]
        return self.descendants(roots)

    def all_pids(self) -> set[int]:
        return set(self.after)
