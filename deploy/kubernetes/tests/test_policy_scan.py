"""policy_scan.py's verdict on a checkov report: a failed check passes only when an entry of
policy/accepted-findings.yaml names it, with a reason, for that overlay and resource; an entry
that nothing needs any more is a problem too."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from .conftest import KUBERNETES, load_module


@pytest.fixture(scope="module")
def scan() -> ModuleType:
    return load_module("k8s_policy_scan", KUBERNETES / "policy_scan.py")


def report(*failures: tuple[str, str, str]) -> dict[str, object]:
    return {
        "check_type": "kubernetes",
        "results": {
            "failed_checks": [
                {
                    "check_id": check,
                    "file_path": f"/{overlay}.yaml",
                    "resource": resource,
                    "check_name": "a check",
                }
                for check, overlay, resource in failures
            ]
        },
    }


def test_every_accepted_finding_has_a_reason_and_names_real_overlays(scan: ModuleType) -> None:
    acceptances = scan.load_acceptances()
    assert acceptances
    for acceptance in acceptances:
        assert len(acceptance.reason) > 40, acceptance.check
        assert acceptance.overlays <= {"local", "production", "local-network-policies"}


def test_a_failure_nobody_accepted_is_reported(scan: ModuleType) -> None:
    findings = scan.failed_findings(report(("CKV_K8S_20", "production", "Deployment.ns.svc")))
    (problem,) = scan.judge(findings, [])
    assert problem.startswith("FAILED CKV_K8S_20 Deployment.svc in overlays/production")


def test_an_acceptance_covers_only_its_overlays_and_resources(scan: ModuleType) -> None:
    acceptance = scan.Acceptance(
        "CKV_K8S_23", frozenset({"local"}), frozenset({"StatefulSet.couchbase"}), "a reason"
    )
    findings = scan.failed_findings(
        report(
            ("CKV_K8S_23", "local", "StatefulSet.ecommerce.couchbase"),
            ("CKV_K8S_23", "production", "StatefulSet.ecommerce.couchbase"),
            ("CKV_K8S_23", "local", "StatefulSet.ecommerce.postgres"),
        )
    )
    problems = scan.judge(findings, [acceptance])
    assert [p.split(":")[0] for p in problems] == [
        "FAILED CKV_K8S_23 StatefulSet.couchbase in overlays/production",
        "FAILED CKV_K8S_23 StatefulSet.postgres in overlays/local",
    ]


def test_an_acceptance_nothing_needs_is_stale(scan: ModuleType) -> None:
    named = scan.Acceptance("CKV_K8S_23", frozenset({"local"}), frozenset({"Job.x"}), "why")
    everywhere = scan.Acceptance("CKV_K8S_43", frozenset({"local"}), None, "why")
    problems = scan.judge([], [named, everywhere])
    assert [p.split(":")[0] for p in problems] == [
        "STALE CKV_K8S_23 Job.x",
        "STALE CKV_K8S_43 any resource",
    ]


def test_an_entry_without_a_reason_is_refused(scan: ModuleType, tmp_path: Path) -> None:
    accepted = tmp_path / "accepted.yaml"
    accepted.write_text("- check: CKV_K8S_43\n  overlays: [local]\n  resources: all\n")
    with pytest.raises(ValueError, match="no reason"):
        scan.load_acceptances(accepted)
