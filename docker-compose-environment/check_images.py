"""Build the image of every service from its own Dockerfile, start each container on the host
network against this machine's PostgreSQL, Redis and RabbitMQ under names of its own run, wait for
the image's own HEALTHCHECK to report healthy, scrape its metrics, stop it with SIGTERM, and remove
everything the run made. Run by check-images.sh, which provides the Docker engine and base image.

Each container runs the way the Kubernetes manifests run its pod (deploy/kubernetes/base/<folder>/
deployment.yaml, read here so the two cannot drift): read-only root filesystem, every capability
dropped, no privilege escalation, the manifests' user and group, and a tmpfs for each emptyDir.

A service is a top-level folder with a Dockerfile. Its HEALTHCHECK names the port variable the
probe follows (`${USER_GRPC_PORT:-50051}`, `${GATEWAY_PORT:-8080}`); the other settings follow the
platform's naming from that prefix: `USER_METRICS_PORT`, `USER_DB_NAME`, and `USER_SERVICE_ADDR`
for the services that call it (docker-compose-environment/tests check the convention)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis.asyncio as redis
import yaml

from chassis.postgres import database_url
from chassis.testing.plugin import _delete_amqp_names, _rabbitmqctl_names

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "deploy" / "kubernetes" / "base"
NAME_PREFIX = "imgcheck"  # every database, key, exchange, queue, container and image of a run
PORT_VARIABLE = re.compile(r"\$\{([A-Z][A-Z0-9_]*_PORT):-\d+\}")
HEALTH_TIMEOUT_S = 120.0


def log(message: str) -> None:
    sys.stdout.write(f"[check-images] {message}\n")
    sys.stdout.flush()


@dataclass(frozen=True)
class Service:
    folder: str
    port_variable: str  # the variable the image's HEALTHCHECK reads its port from

    @property
    def grpc(self) -> bool:
        return self.port_variable.endswith("_GRPC_PORT")

    @property
    def prefix(self) -> str:
        return self.port_variable.removesuffix("_GRPC_PORT").removesuffix("_PORT")


def discover(root: Path = ROOT) -> list[Service]:
    """Every top-level folder with a Dockerfile whose final stage probes a port variable."""
    services = []
    for dockerfile in sorted(root.glob("*/Dockerfile")):
        final_stage = re.sub(r"\\\n\s*", " ", dockerfile.read_text()).rsplit("\nFROM ", 1)[-1]
        healthcheck = re.findall(r"^HEALTHCHECK .* CMD (\[.*\])\s*$", final_stage, re.MULTILINE)
        if not healthcheck:
            raise SystemExit(f"{dockerfile}: no exec-form HEALTHCHECK in the final stage")
        variables = {v for arg in json.loads(healthcheck[-1]) for v in PORT_VARIABLE.findall(arg)}
        if len(variables) != 1:
            raise SystemExit(f"{dockerfile}: the HEALTHCHECK must probe one ${{NAME_PORT:-n}}")
        services.append(Service(dockerfile.parent.name, variables.pop()))
    return services


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Run:
    services: list[Service]
    docker: str
    run_id: str = field(default_factory=lambda: f"{NAME_PREFIX}{uuid.uuid4().hex[:8]}")
    ports: dict[str, int] = field(default_factory=dict)  # variable -> port

    def _new_port(self) -> int:
        """A free port none of this run's variables has yet: the kernel may hand a port it just
        gave back once more (two calls in a row once returned the same one)."""
        while (port := free_port()) in self.ports.values():
            pass
        return port

    def image(self, service: Service) -> str:
        return f"{NAME_PREFIX}/{service.folder}:{self.run_id}"

    def container(self, service: Service) -> str:
        return f"{self.run_id}-{service.folder}"

    def environment(self) -> dict[str, str]:
        """One environment for every container: each reads the variables of its settings."""
        env = {
            "POSTGRES_URL": os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"),
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "AMQP_URL": os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
            "EVENTS_EXCHANGE": f"{self.run_id}.events",
            "QUEUE_PREFIX": f"{self.run_id}.",
            "REDIS_KEY_PREFIX": f"{self.run_id}:",
            "GRPC_HOST": "127.0.0.1",
            "METRICS_HOST": "127.0.0.1",
            "GATEWAY_HOST": "127.0.0.1",
            "CART_STORE": "redis",
            "LOG_LEVEL": "INFO",
        }
        for service in self.services:
            port = self.ports.setdefault(service.port_variable, self._new_port())
            env[service.port_variable] = str(port)
            # Every process serves /metrics on a port of its own (the gateway never on its
            # public one).
            metrics = self.ports.setdefault(f"{service.prefix}_METRICS_PORT", self._new_port())
            env[f"{service.prefix}_METRICS_PORT"] = str(metrics)
            if service.grpc:
                env[f"{service.prefix}_SERVICE_ADDR"] = f"127.0.0.1:{port}"
                env[f"{service.prefix}_DB_NAME"] = f"{self.run_id}_{service.prefix.lower()}"
        if "GATEWAY_PORT" in env:
            # The storefront (an HTTP client of the gateway, as any) finds it by URL.
            env["GATEWAY_URL"] = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
            env["STOREFRONT_HOST"] = "127.0.0.1"
        return env

    def metrics_url(self, service: Service) -> str:
        return f"http://127.0.0.1:{self.ports[f'{service.prefix}_METRICS_PORT']}/metrics"

    def docker_run(self, *args: str, check: bool = True, merge_stderr: bool = False) -> str:
        result = subprocess.run(  # noqa: S603 - the docker CLI with fixed arguments
            [self.docker, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {args[0]}: {result.stderr.strip()}")
        return result.stdout


class CheckFailed(Exception):
    pass


def build(run: Run, service: Service, log_dir: Path) -> float:
    started = time.monotonic()
    log_file = log_dir / f"build-{service.folder}.log"
    command = [run.docker, "build", "--progress", "plain", "--network", "host"]
    command += ["-f", f"{service.folder}/Dockerfile", "-t", run.image(service), "."]
    with log_file.open("w") as out:
        result = subprocess.run(  # noqa: S603 - the docker CLI with fixed arguments
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
        )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text().splitlines()[-40:])
        raise CheckFailed(f"{service.folder}: the image did not build:\n{tail}")
    return time.monotonic() - started


def _docker_size(quantity: str) -> str:
    """A Kubernetes quantity (`16Mi`, `1Gi`) as a tmpfs size (`16m`, `1g`)."""
    match = re.fullmatch(r"(\d+)([KMG])i", quantity)
    if match is None:
        raise SystemExit(f"{MANIFESTS}: emptyDir sizeLimit {quantity!r} is not n Ki, Mi or Gi")
    return f"{match[1]}{match[2].lower()}"


def pod_security_arguments(service: Service, manifests: Path = MANIFESTS) -> list[str]:
    """The `docker run` arguments that make the container run as the service's pod does: the
    pod's user and group, a read-only root filesystem, no capability, no privilege escalation,
    and a tmpfs where the pod mounts an emptyDir (the only writable paths)."""
    deployment = yaml.safe_load((manifests / service.folder / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    user = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    context = container["securityContext"]
    if not (
        context.get("readOnlyRootFilesystem")
        and context.get("allowPrivilegeEscalation") is False
        and context.get("capabilities", {}).get("drop") == ["ALL"]
    ):
        raise SystemExit(
            f"{service.folder}: its pod is not read-only, capability-free and unescalated"
        )
    arguments = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    arguments += ["--user", f"{user['runAsUser']}:{user['runAsGroup']}"]
    empty_dirs = {v["name"]: v["emptyDir"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in empty_dirs:
            raise SystemExit(f"{service.folder}: mounts {mount['name']}, which is no emptyDir")
        size = _docker_size(empty_dirs[mount["name"]].get("sizeLimit", "64Mi"))
        arguments += ["--tmpfs", f"{mount['mountPath']}:rw,exec,nosuid,size={size}"]
    return arguments


def run_arguments(run: Run, service: Service, environment: dict[str, str]) -> list[str]:
    """The whole `docker run` command line of a service's container."""
    variables = [arg for name, value in environment.items() for arg in ("-e", f"{name}={value}")]
    # Only the interval is shortened; the test, timeout, start period and retries are the image's.
    return [
        "run", "--detach", "--name", run.container(service), "--network", "host",
        "--label", f"{NAME_PREFIX}.run={run.run_id}", "--health-interval", "1s",
        *pod_security_arguments(service), *variables, run.image(service),
    ]  # fmt: skip


def start(run: Run, service: Service, environment: dict[str, str]) -> None:
    run.docker_run(*run_arguments(run, service, environment))


def why(run: Run, service: Service) -> str:
    """The container's state, its last health probe output and its last log lines."""
    name = run.container(service)
    state = json.loads(run.docker_run("inspect", "--format", "{{json .State}}", name) or "{}")
    probes = (state.get("Health") or {}).get("Log") or [{}]
    last_probe = str(probes[-1].get("Output", "none yet")).strip()
    logs = run.docker_run("logs", "--tail", "12", name, check=False, merge_stderr=True).rstrip()
    return (
        f"--- {service.folder}: {state.get('Status')}"
        f" {(state.get('Health') or {}).get('Status', '')}, exit code {state.get('ExitCode')};"
        f" last probe: {last_probe}\n{logs}"
    )


def wait_healthy(run: Run, started: dict[str, float]) -> dict[str, float]:
    """Seconds from `docker run` to healthy, by folder. Fails, describing every container not
    healthy, as soon as one has exited or is unhealthy, or at the timeout."""
    healthy: dict[str, float] = {}
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while len(healthy) < len(run.services):
        broken = []
        for service in run.services:
            if service.folder in healthy:
                continue
            state = run.docker_run(
                "inspect", "--format",
                "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
                run.container(service),
            ).split()  # fmt: skip
            if state[-1] == "healthy":
                healthy[service.folder] = time.monotonic() - started[service.folder]
            elif state[0] != "running" or state[-1] == "unhealthy":
                broken.append(service.folder)
        timed_out = time.monotonic() > deadline
        if broken or timed_out:
            cause = (
                f"not healthy in {HEALTH_TIMEOUT_S:.0f} s" if timed_out else "stopped or unhealthy"
            )
            details = [why(run, s) for s in run.services if s.folder not in healthy]
            raise CheckFailed(f"{', '.join(broken) or 'some'}: {cause}\n" + "\n".join(details))
        time.sleep(0.25)
    return healthy


def scrape(service: Service, url: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback http
            body = response.read().decode()
    except OSError as error:  # HTTPError and URLError included
        raise CheckFailed(f"{service.folder}: {url}: {error}") from error
    if "# TYPE " not in body:
        raise CheckFailed(f"{url}: no Prometheus metrics in the answer")


def stop(run: Run, service: Service) -> int:
    run.docker_run("stop", "--time", "30", run.container(service))
    code = run.docker_run("inspect", "--format", "{{.State.ExitCode}}", run.container(service))
    return int(code)


async def clean_servers(environment: dict[str, str], prefix: str) -> list[str]:
    """Drop the databases and delete the Redis keys, exchanges and queues named with `prefix`."""
    removed: list[str] = []
    conn = await asyncpg.connect(database_url(environment["POSTGRES_URL"], "postgres"), timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", prefix
        )
        for row in rows:
            await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
            removed.append(f"database {row['datname']}")
    finally:
        await conn.close()
    client = redis.from_url(environment["REDIS_URL"], socket_timeout=5)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
            removed.append(f"{len(keys)} Redis keys")
    finally:
        await client.aclose()
    queues = await asyncio.to_thread(_rabbitmqctl_names, "queues", prefix)
    exchanges = await asyncio.to_thread(_rabbitmqctl_names, "exchanges", prefix)
    removed += [f"queue {name}" for name in queues] + [f"exchange {name}" for name in exchanges]
    if prefix != NAME_PREFIX:  # a run's own exchanges, also where rabbitmqctl cannot list them
        exchanges = sorted({*exchanges, f"{prefix}.events", f"{prefix}.events.dlx"})
    await _delete_amqp_names(environment["AMQP_URL"], queues, exchanges)
    return removed


def clean_docker(run: Run) -> None:
    containers = run.docker_run("ps", "-aq", "--filter", f"label={NAME_PREFIX}.run").split()
    if containers:
        run.docker_run("rm", "--force", "--volumes", *containers)
    images = run.docker_run("images", "-q", "--filter", f"reference={NAME_PREFIX}/*").split()
    if images:
        run.docker_run("image", "rm", "--force", *sorted(set(images)))


def check(run: Run, environment: dict[str, str], log_dir: Path) -> list[str]:
    rows, started = [], {}
    built = {service.folder: build(run, service, log_dir) for service in run.services}
    for service in run.services:
        log(f"built {run.image(service)} in {built[service.folder]:.1f} s")
    for service in run.services:
        start(run, service, environment)
        started[service.folder] = time.monotonic()
    healthy = wait_healthy(run, started)
    for service in run.services:
        scrape(service, run.metrics_url(service))
    for service in run.services:
        code = stop(run, service)
        if code != 0:
            raise CheckFailed(f"{service.folder}: exited {code} on SIGTERM\n{why(run, service)}")
        rows.append(
            f"{service.folder:<18} build {built[service.folder]:5.1f} s   healthy after"
            f" {healthy[service.folder]:4.1f} s   metrics ok   SIGTERM: exit 0"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docker", default=os.environ.get("DOCKER_CLI", "docker"))
    parser.add_argument("--log-dir", type=Path, default=ROOT / "var" / "check-images")
    args = parser.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    run = Run(discover(), args.docker)
    environment = run.environment()
    log(f"run {run.run_id}: {', '.join(s.folder for s in run.services)}")
    clean_docker(run)  # a run killed before its cleanup (runs never overlap: see the lock)
    leftovers = asyncio.run(clean_servers(environment, NAME_PREFIX))
    if leftovers:
        log(f"removed leftovers of an earlier run: {', '.join(leftovers)}")
    started = time.monotonic()
    failure: str | None = None
    try:
        rows = check(run, environment, args.log_dir)
    except (CheckFailed, RuntimeError, OSError) as error:
        failure, rows = str(error), []
    finally:
        clean_docker(run)
        removed = asyncio.run(clean_servers(environment, run.run_id))
        log(f"removed containers, images and {', '.join(removed) or 'no server names'}")
    for row in rows:
        log(row)
    if failure is not None:
        log(f"FAILED: {failure}")
        return 1
    log(f"all {len(rows)} images healthy; {time.monotonic() - started:.1f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
