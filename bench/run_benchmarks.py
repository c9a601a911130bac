"""Run every benchmark in bench/ and write their tables to one Markdown file.

    uv run python bench/run_benchmarks.py                  # full sizes -> bench/RESULTS.md
    uv run python bench/run_benchmarks.py --smoke --output /tmp/smoke.md   # seconds each (CI)

Each benchmark runs as its own process with the sizes below; its stdout (Markdown) is copied under
a heading with the load average before and after it, the file under a header naming the date,
the commit and the machine. A benchmark that fails makes the run fail (after the file is written),
so a script that rotted fails CI; the smoke sizes check that every script still runs, not its
figures.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str
    script: str
    full: tuple[str, ...]
    smoke: tuple[str, ...]


BENCHMARKS = (
    Benchmark(
        "outbox and inbox",
        "bench/outbox/bench_outbox.py",
        ("--events", "5000", "--relays", "1", "2", "--prefetch", "64"),
        ("--events", "200", "--relays", "1", "--prefetch", "64"),
    ),
    Benchmark(
        "checkout saga vs floor",
        "bench/saga/bench_checkout.py",
        ("--shoppers", "64", "--warm-up", "5", "--duration", "30", "--half-runs", "3"),
        ("--shoppers", "8", "--warm-up", "1", "--duration", "3", "--drain", "15"),
    ),
    Benchmark(
        "checkout saga, two replicas of every service",
        "bench/saga/bench_checkout.py",
        ("--shoppers", "64", "--warm-up", "5", "--duration", "30", "--no-floor", "--replicas", "2"),
        (
            "--shoppers",
            "8",
            "--warm-up",
            "1",
            "--duration",
            "3",
            "--drain",
            "15",
            "--no-floor",
            "--replicas",
            "2",
        ),
    ),
    Benchmark(
        "gateway",
        "bench/gateway/bench_gateway.py",
        ("--duration", "10", "--runs", "3", "--connections", "64"),
        ("--duration", "1", "--runs", "1", "--connections", "16"),
    ),
    Benchmark(
        "abuse",
        "bench/abuse/bench_abuse.py",
        ("platform", "--mb", "16", "--seconds", "5", "--logins", "50"),
        ("platform", "--mb", "1", "--seconds", "1", "--logins", "6"),
    ),
    Benchmark(
        "load generator vs checkout benchmark",
        "bench/load/bench_load.py",
        ("--users", "64", "--warm-up", "10", "--duration", "60"),
        ("--users", "4", "--warm-up", "2", "--duration", "5"),
    ),
)


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def git_commit() -> str:
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return described.stdout.strip() or "unknown"


# Log lines the chassis writes to stdout inside a benchmark's own process (console or JSON).
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[|\{\")")


def tables_only(output: str) -> str:
    """A benchmark's stdout without the log lines of the chassis code it runs in-process."""
    return "\n".join(line for line in output.splitlines() if not _LOG_LINE.match(line)).strip()


def run(benchmark: Benchmark, smoke: bool) -> tuple[str, int, float]:
    """The benchmark's stdout, exit code and duration; its stderr (progress) passes through."""
    arguments = benchmark.smoke if smoke else benchmark.full
    command = [sys.executable, str(ROOT / benchmark.script), *arguments]
    print(f"[bench] {benchmark.name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    started = time.monotonic()
    finished = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    return finished.stdout, finished.returncode, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds each (CI)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--only", nargs="*", help="names of the benchmarks to run (substrings)")
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or any(part in b.name for part in args.only)]
    sections = [
        "# Benchmark results" + (" (smoke sizes: figures mean nothing)" if args.smoke else ""),
        "",
        f"Written by `make {'bench-smoke' if args.smoke else 'bench'}` "
        f"(`bench/run_benchmarks.py`) on {time.strftime('%Y-%m-%d %H:%M %Z')}, commit "
        f"`{git_commit()}`, {os.cpu_count()} cores; load average (1/5/15 min) at the start "
        f"{load_average()}. Each table's own lines say how it was measured; bench/README.md "
        "keeps the history and explains each benchmark.",
    ]
    failed = []
    for benchmark in chosen:
        before = load_average()
        output, code, seconds = run(benchmark, args.smoke)
        sections += [
            "",
            f"## {benchmark.name}",
            "",
            f"`{benchmark.script}`, {seconds:.0f} s; load average before {before}, "
            f"after {load_average()}." + (f" **Failed with exit code {code}.**" if code else ""),
            "",
            tables_only(output),
        ]
        if code:
            failed.append(benchmark.name)
    args.output.write_text("\n".join(sections) + "\n")
    print(f"[bench] tables written to {args.output}", file=sys.stderr)
    if failed:
        print(f"[bench] FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
