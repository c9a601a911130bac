"""Judge a checkov report of the rendered overlays against policy/accepted-findings.yaml: every
failed check must be accepted there with a reason, and every accepted entry must still fail
somewhere it names (so the list never outlives its reasons).

    uv run python deploy/kubernetes/policy_scan.py CHECKOV_JSON    # exit 1 on any problem

The report is `checkov --framework kubernetes -f <overlay>.yaml ... -o json`; the overlay of a
finding is its file's name."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ACCEPTED = Path(__file__).resolve().parent / "policy" / "accepted-findings.yaml"


@dataclass(frozen=True)
class Finding:
    check: str
    overlay: str
    resource: str  # Kind.name, without the namespace
    title: str


@dataclass(frozen=True)
class Acceptance:
    check: str
    overlays: frozenset[str]
    resources: frozenset[str] | None  # None: every resource
    reason: str

    def covers(self, finding: Finding) -> bool:
        return (
            finding.check == self.check
            and finding.overlay in self.overlays
            and (self.resources is None or finding.resource in self.resources)
        )


def load_acceptances(path: Path = ACCEPTED) -> list[Acceptance]:
    entries = yaml.safe_load(path.read_text()) or []
    acceptances = []
    for entry in entries:
        reason = str(entry.get("reason") or "").strip()
        if not reason:
            raise ValueError(f"{path.name}: {entry.get('check')} has no reason")
        resources = entry.get("resources", "all")
        acceptances.append(
            Acceptance(
                check=entry["check"],
                overlays=frozenset(entry["overlays"]),
                resources=None if resources == "all" else frozenset(resources),
                reason=reason,
            )
        )
    return acceptances


def _resource(name: str) -> str:
    parts = name.split(".")
    return f"{parts[0]}.{parts[-1]}"


def failed_findings(report: Any) -> list[Finding]:
    """The failed checks of a checkov JSON report (one check type or a list of them)."""
    reports = report if isinstance(report, list) else [report]
    findings = []
    for one in reports:
        for failed in (one.get("results") or {}).get("failed_checks", []):
            findings.append(
                Finding(
                    check=failed["check_id"],
                    overlay=Path(failed["file_path"]).stem,
                    resource=_resource(failed["resource"]),
                    title=failed.get("check_name", ""),
                )
            )
    return findings


def judge(findings: list[Finding], acceptances: list[Acceptance]) -> list[str]:
    """One line per problem: a failure nobody accepted, or an acceptance nothing needs."""
    problems = [
        f"FAILED {f.check} {f.resource} in overlays/{f.overlay}: {f.title}"
        for f in findings
        if not any(a.covers(f) for a in acceptances)
    ]
    for acceptance in acceptances:
        needed = {f.resource for f in findings if acceptance.covers(f)}
        stale = (acceptance.resources or frozenset({"any resource"})) - needed
        if acceptance.resources is None and needed:
            stale = frozenset()
        for resource in sorted(stale):
            problems.append(
                f"STALE {acceptance.check} {resource}: accepted but no longer failing; remove it"
                f" from {ACCEPTED.name}"
            )
    return problems


def main() -> int:
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    report = json.loads(Path(sys.argv[1]).read_text())
    findings = failed_findings(report)
    acceptances = load_acceptances()
    problems = judge(findings, acceptances)
    accepted = len(findings) - sum(line.startswith("FAILED") for line in problems)
    reports = report if isinstance(report, list) else [report]
    passed = sum(int((one.get("summary") or {}).get("passed", 0)) for one in reports)
    for line in problems:
        sys.stdout.write(line + "\n")
    sys.stdout.write(
        f"checkov: {passed} passed, {len(findings)} failed, {accepted} of them accepted with a"
        f" reason ({len(acceptances)} entries in {ACCEPTED.name}), {len(problems)} problems\n"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
