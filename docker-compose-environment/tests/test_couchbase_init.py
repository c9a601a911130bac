"""couchbase/init-cluster.sh, run against a stand-in for the Couchbase REST API and CLI that keeps
the cluster's state in a folder: it creates the bucket service-cart reads, and a second run (every
`docker compose up` runs it) changes nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cart_service.settings import CartSettings

# curl: /pools answers; /pools/default once initialised; a bucket's details once it exists.
FAKE_CURL = r"""#!/usr/bin/env bash
url="${@: -1}"
case "$url" in
  */pools) exit 0 ;;
  */pools/default) [ -f "$STATE/initialised" ] ;;
  */pools/default/buckets/*)
    [ -f "$STATE/bucket-${url##*/}" ] && echo '{"name":"x","status":"healthy"}' ;;
  *) echo "unexpected url $url" >&2; exit 2 ;;
esac
"""
FAKE_CLI = r"""#!/usr/bin/env bash
echo "$*" >> "$STATE/calls"
case "$1" in
  cluster-init) touch "$STATE/initialised" ;;
  bucket-list)
    for f in "$STATE"/bucket-*; do
      if [ -e "$f" ]; then printf '%s\n bucketType: membase\n' "${f##*/bucket-}"; fi
    done ;;
  bucket-create)
    [ -f "$STATE/initialised" ] || exit 1
    while [ $# -gt 0 ]; do [ "$1" = --bucket ] && touch "$STATE/bucket-$2"; shift; done ;;
  *) echo "unexpected command $1" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def fake_couchbase(tmp_path: Path) -> dict[str, str]:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, text in (("curl", FAKE_CURL), ("couchbase-cli", FAKE_CLI)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STATE": str(state),
        "COUCHBASE_CLI": str(bin_dir / "couchbase-cli"),
    }


def run_init(
    environment_dir: Path, init_environment: dict[str, str], fake: dict[str, str]
) -> list[str]:
    state = Path(fake["STATE"])
    (state / "calls").unlink(missing_ok=True)
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run(
        [bash, str(environment_dir / "couchbase/init-cluster.sh")],
        env={**init_environment, **fake},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    calls = state / "calls"
    return [line.split()[0] for line in calls.read_text().splitlines()] if calls.exists() else []


def init_environment(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The init job's environment with the compose defaults."""
    return {
        name: str(value).split(":-", 1)[1].rstrip("}") if ":-" in str(value) else str(value)
        for name, value in services["couchbase-init"]["environment"].items()
    }


def test_the_init_job_creates_the_bucket_once_and_a_second_run_changes_nothing(
    services: dict[str, dict[str, Any]], environment_dir: Path, fake_couchbase: dict[str, str]
) -> None:
    environment = init_environment(services)
    first = run_init(environment_dir, environment, fake_couchbase)
    assert first == ["cluster-init", "bucket-list", "bucket-create"]
    assert (Path(fake_couchbase["STATE"]) / f"bucket-{environment['COUCHBASE_BUCKET']}").exists()
    second = run_init(environment_dir, environment, fake_couchbase)
    assert second == ["bucket-list"], "a second run must only look"


def test_the_init_job_creates_the_bucket_scope_and_collection_the_cart_service_reads(
    services: dict[str, dict[str, Any]],
) -> None:
    cart = services["service-cart"]["environment"]
    bucket = init_environment(services)["COUCHBASE_BUCKET"]
    assert bucket == CartSettings.model_fields["couchbase_bucket"].default
    assert cart["COUCHBASE_BUCKET"] == services["couchbase-init"]["environment"]["COUCHBASE_BUCKET"]
    # The init job makes no scope or collection: the cart must use the default ones, which
    # every bucket has, and compose must not point it at others.
    assert CartSettings.model_fields["couchbase_scope"].default == "_default"
    assert CartSettings.model_fields["couchbase_collection"].default == "_default"
    assert "COUCHBASE_SCOPE" not in cart
    assert "COUCHBASE_COLLECTION" not in cart
