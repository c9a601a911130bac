#!/usr/bin/env bash
# Build every service image from its real Dockerfile and wait for each container's own HEALTHCHECK
# against this machine's PostgreSQL, Redis and RabbitMQ (check_images.py), then remove what it made.
#   docker-compose-environment/check-images.sh     (or `make check-images`, from the root)
# Provides what that needs on a machine that reaches no image registry:
#   - a Docker engine: the one DOCKER_HOST (or the default socket) names, else a private dockerd
#     on its own socket, data root and no bridge (stopped again at the end), so that no other
#     process on the machine starts seeing a Docker engine;
#   - the base image the Dockerfiles name (python:3.11-slim-bookworm): when it is neither present
#     nor pullable, made from a debootstrap'd Debian bookworm (cached as a tarball under var/).
# Exit status: 0 all healthy, 1 a build, health or cleanup failure, 3 cannot run on this machine
# (the first line says which step and why).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cache_dir="${IMAGE_CACHE_DIR:-$root/var/images}"
state_dir="${CHECK_IMAGES_STATE_DIR:-/var/lib/ecommerce-check-images}"
run_dir=/run/ecommerce-check-images
# The base every Dockerfile names (they all name the same one).
base_image="$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$root"/*/Dockerfile | sort -u)"
minbase_image=ecommerce-base/debian-minbase:bookworm
private_dockerd_pid=""
started=$SECONDS

log() { printf '[check-images] %s\n' "$*"; }
cannot_run() { log "SKIPPED: $*"; exit 3; }

# A client that can drive BuildKit: a newer client refuses DOCKER_BUILDKIT=1 without buildx,
# Debian's 20.10 client hands the build to the engine's own BuildKit.
pick_client() {
  local candidate
  for candidate in ${DOCKER_CLI:-} /usr/bin/docker "$(command -v docker || true)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if "$candidate" buildx version >/dev/null 2>&1; then echo "$candidate"; return; fi
    local major
    major="$("$candidate" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)"
    if [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null; then echo "$candidate"; return; fi
  done
}

stop_private_dockerd() {
  [ -n "$private_dockerd_pid" ] || return 0
  log "stopping the private dockerd (pid $private_dockerd_pid)"
  kill -TERM "$private_dockerd_pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$private_dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$private_dockerd_pid" 2>/dev/null; then
    log "dockerd $private_dockerd_pid did not stop in 30 s; killing it"
    kill -KILL "$private_dockerd_pid" 2>/dev/null || true
  fi
  # dockerd leaves its default network namespace mounted under its exec root.
  umount "$run_dir/exec/netns/default" 2>/dev/null || true
}

start_private_dockerd() {
  command -v dockerd >/dev/null 2>&1 || cannot_run "no Docker engine answers and dockerd is not installed (Debian: apt-get install docker.io)"
  [ "$(id -u)" = 0 ] || cannot_run "no Docker engine answers and only root can start dockerd"
  mkdir -p "$run_dir" "$state_dir"
  export DOCKER_HOST="unix://$run_dir/docker.sock"
  if "$docker" info >/dev/null 2>&1; then
    # Left by a run that was killed (runs hold the lock): adopt it, and stop it at the end.
    private_dockerd_pid="$(cat "$run_dir/docker.pid")"
    log "reusing the private dockerd left by an earlier run (pid $private_dockerd_pid)"
    return 0
  fi
  log "starting a private dockerd on $DOCKER_HOST (data root $state_dir/docker)"
  setsid dockerd --host "$DOCKER_HOST" --pidfile "$run_dir/docker.pid" \
    --exec-root "$run_dir/exec" --data-root "$state_dir/docker" \
    --bridge none --iptables=false --ip-forward=false >"$state_dir/dockerd.log" 2>&1 &
  private_dockerd_pid=$!
  for _ in $(seq 1 60); do
    "$docker" info >/dev/null 2>&1 && return 0
    kill -0 "$private_dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  local reason
  reason="$(tail -n 3 "$state_dir/dockerd.log" | tr '\n' ' ')"
  stop_private_dockerd
  private_dockerd_pid=""
  cannot_run "dockerd did not start: $reason"
}

make_base_image() {
  local t0=$SECONDS tarball="$cache_dir/debian-bookworm-minbase.tar.gz"
  if ! "$docker" image inspect "$minbase_image" >/dev/null 2>&1; then
    if [ ! -s "$tarball" ]; then
      command -v debootstrap >/dev/null 2>&1 || cannot_run "no base image $base_image and no debootstrap to make one (Debian: apt-get install debootstrap)"
      local rootfs
      rootfs="$(mktemp -d "$state_dir/rootfs.XXXXXX")"
      log "debootstrap --variant=minbase bookworm (once; cached as $tarball)"
      if ! debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian \
          >"$state_dir/debootstrap.log" 2>&1; then
        rm -rf "$rootfs"
        cannot_run "debootstrap failed: $(tail -n 2 "$state_dir/debootstrap.log" | tr '\n' ' ')"
      fi
      log "debootstrap done in $((SECONDS - t0)) s"
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
      mkdir -p "$cache_dir"
      tar --numeric-owner -C "$rootfs" -c . | gzip -1 >"$tarball.tmp"
      mv "$tarball.tmp" "$tarball"
      rm -rf "$rootfs"
    fi
    "$docker" import "$tarball" "$minbase_image" >/dev/null
  fi
  local context
  context="$(mktemp -d)"
  cp "$here/base-image/Dockerfile" "$context/"
  mkdir "$context/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$context/ca-certificates/" 2>/dev/null || true
  if ! DOCKER_BUILDKIT=1 "$docker" build --progress plain --network host \
      --build-arg "DEBIAN_IMAGE=$minbase_image" -t "$base_image" "$context" \
      >"$state_dir/base-image.log" 2>&1; then
    rm -rf "$context"
    log "FAILED: the base image did not build:"; tail -n 30 "$state_dir/base-image.log"
    exit 1
  fi
  rm -rf "$context"
  log "base image $base_image made in $((SECONDS - t0)) s"
}

[ "$(wc -l <<<"$base_image")" = 1 ] && [ -n "$base_image" ] \
  || { log "FAILED: the Dockerfiles name different bases: $base_image"; exit 1; }
docker="$(pick_client)"
[ -n "$docker" ] || cannot_run "no docker client that can run BuildKit builds (Debian: apt-get install docker.io)"
export DOCKER_CLI="$docker"
command -v flock >/dev/null 2>&1 || cannot_run "flock (util-linux) is missing"
mkdir -p "$state_dir"
# One run at a time on a machine: runs share the private engine and sweep each other's leftovers.
exec 9>"$state_dir/lock"
flock --timeout 900 9 || cannot_run "another image check has held $state_dir/lock for 15 minutes"
trap stop_private_dockerd EXIT
trap 'exit 130' INT TERM  # so that the EXIT trap stops the private dockerd

if ! "$docker" info >/dev/null 2>&1; then
  start_private_dockerd
fi
log "Docker engine $("$docker" version --format '{{.Server.Version}}') at ${DOCKER_HOST:-the default socket}"

if "$docker" image inspect "$base_image" >/dev/null 2>&1; then
  log "base image $base_image present"
elif timeout 60 "$docker" pull --quiet "$base_image" >/dev/null 2>&1; then
  log "base image $base_image pulled"
else
  log "base image $base_image can be neither found nor pulled: making it locally"
  make_base_image
fi

cd "$root"
status=0
uv run --frozen python docker-compose-environment/check_images.py --docker "$docker" || status=$?
"$docker" builder prune --force --keep-storage 3GB >/dev/null 2>&1 || true
log "done in $((SECONDS - started)) s"
exit "$status"
