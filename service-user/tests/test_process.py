"""The real `service-user` executable: health, a Register call, key persistence across restarts,
clear configuration errors, and no secret in its logs."""

import json
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import grpc
import jwt
import pytest

from chassis.testing.process import ServiceProcess, free_port
from ecommerce.user.v1 import user_pb2, user_pb2_grpc

EXECUTABLE = shutil.which("service-user")
ADMIN_PASSWORD = "process admin password"


@pytest.fixture
def process_env(
    postgres_url: str, user_db: tuple[str, str], redis_url: str, redis_key_prefix: str
) -> Callable[..., dict[str, str]]:
    def env(**overrides: str) -> dict[str, str]:
        values = {
            "USER_GRPC_PORT": str(free_port()),
            "USER_METRICS_PORT": "0",
            "GRPC_HOST": "127.0.0.1",
            "POSTGRES_URL": postgres_url,
            "USER_DB_NAME": user_db[0],
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": redis_key_prefix,
            "ARGON2_TIME_COST": "1",
            "ARGON2_MEMORY_COST_KIB": "64",
            "ARGON2_PARALLELISM": "1",
            "READINESS_INTERVAL_SECONDS": "0.2",
            "LOGIN_RATE_PER_CLIENT": "100000",
            "REGISTER_RATE_PER_CLIENT": "100000",
            "JWT_PRIVATE_KEY": "",
            "JWT_PRIVATE_KEY_FILE": "",
            "ADMIN_EMAIL": "",
            "ADMIN_PASSWORD": "",
        }
        values.update(overrides)
        return values

    return env


def start(env: dict[str, str]) -> ServiceProcess:
    assert EXECUTABLE, "the service-user entry point is not installed"
    return ServiceProcess([EXECUTABLE], env=env, name="service-user")


@pytest.mark.slow
async def test_process_serves_registers_stops_on_sigterm_and_keeps_its_key_across_restarts(
    process_env: Callable[..., dict[str, str]], email: str, tmp_path: Path
) -> None:
    admin_email = f"admin-{email}"
    key_file = tmp_path / "keys" / "jwt.pem"
    env = process_env(
        JWT_PRIVATE_KEY_FILE=str(key_file), ADMIN_EMAIL=admin_email, ADMIN_PASSWORD=ADMIN_PASSWORD
    )
    address = f"127.0.0.1:{env['USER_GRPC_PORT']}"
    async with start(env) as first_run:
        await first_run.wait_serving(address, timeout_s=60, service="ecommerce.user.v1.UserService")
        async with grpc.aio.insecure_channel(address) as channel:
            stub = user_pb2_grpc.UserServiceStub(channel)
            reply = await stub.Register(
                user_pb2.RegisterRequest(
                    email=email, password="process password", full_name="Pro Cess"
                ),
                timeout=10,
            )
            assert reply.user.email == email
            login = await stub.Login(
                user_pb2.LoginRequest(email=admin_email, password=ADMIN_PASSWORD), timeout=10
            )
        assert first_run.stop() == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    output = "\n".join(first_run.stdout_lines + first_run.stderr_lines)
    for secret in (ADMIN_PASSWORD, "process password", login.access_token):
        assert secret not in output
    assert all(json.loads(line)["service"] == "service-user" for line in first_run.stdout_lines)

    # A restart reads the key the first run generated: its token still verifies.
    async with start(env) as second_run:
        await second_run.wait_serving(address, timeout_s=60)
        async with grpc.aio.insecure_channel(address) as channel:
            jwks = await user_pb2_grpc.UserServiceStub(channel).GetJwks(
                user_pb2.GetJwksRequest(), timeout=10
            )
    (key,) = jwks.keys
    assert key.kid == jwt.get_unverified_header(login.access_token)["kid"]
    public_key = jwt.PyJWK({"kty": key.kty, "crv": key.crv, "x": key.x}).key
    claims = jwt.decode(
        login.access_token, public_key, algorithms=["EdDSA"], audience="ecommerce-api"
    )
    assert claims["role"] == "admin"
