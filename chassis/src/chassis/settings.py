"""Service configuration from environment variables: the base settings, store mixins, and the
loader that turns a bad variable into one clear line and exit code 2."""

from __future__ import annotations

import sys
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

# No populate_by_name: a field with an alias must be read from that variable only, never from a
# generic one that happens to share its field name (honcho sets PORT, shells set HOST).
_CONFIG = SettingsConfigDict(case_sensitive=False, extra="ignore")

# The values of OTEL_TRACES_SAMPLER accepted: parent-based only, so that a trace is kept or dropped
# whole (a service deciding on its own would cut a checkout's trace into pieces).
TracesSampler = Literal[
    "parentbased_traceidratio", "parentbased_always_on", "parentbased_always_off"
]
# How log lines look: JSON (for machines: containers, tests, anything piped), one coloured line per
# event for a person, or the person's when stdout is a terminal and JSON otherwise.
LogFormat = Literal["json", "console", "auto"]


class ProcessSettings(BaseSettings):
    """What every process of the platform needs (the gateway included): logging, tracing and the
    Prometheus endpoint. Subclasses redefine `metrics_port` with their own alias."""

    model_config = _CONFIG

    service_name: ClassVar[str] = "service"

    log_level: str = "INFO"
    log_format: LogFormat = "json"
    otel_exporter_otlp_endpoint: str | None = None
    # The standard OpenTelemetry variables; read only when the endpoint above is set.
    otel_traces_sampler: TracesSampler = "parentbased_traceidratio"
    otel_traces_sampler_arg: float = Field(1.0, ge=0.0, le=1.0)
    # Internal ports listen on loopback unless told otherwise (containers set 0.0.0.0): outside
    # a container, nothing but the gateway should be reachable from another machine.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, le=65535)


class ServiceSettings(ProcessSettings):
    """What every gRPC service process needs; subclasses redefine the ports with their aliases."""

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535)
    # RPCs served at once; beyond it the server answers RESOURCE_EXHAUSTED at once instead of
    # queueing work it cannot finish before the callers' deadlines.
    grpc_max_concurrent_rpcs: int = Field(256, ge=1)
    shutdown_grace_seconds: float = Field(10.0, ge=0)
    # On SIGTERM the replica first reports NOT_SERVING and waits this long, so the clients that
    # watch its health move their calls to the other replicas before it stops accepting any.
    shutdown_drain_delay_seconds: float = Field(0.5, ge=0)
    # A client connection older than this is asked to go (GOAWAY, in-flight calls finish within
    # the grace): clients then reconnect and re-resolve, and spread over replicas added since.
    grpc_max_connection_age_seconds: float = Field(30.0, gt=0)
    grpc_max_connection_age_grace_seconds: float = Field(10.0, ge=0)
    readiness_interval_seconds: float = Field(3.0, gt=0)
    startup_retry_max_seconds: float = Field(5.0, gt=0)
    # An RPC that takes longer is logged as `slow_rpc` (warning) besides its access line.
    slow_rpc_seconds: float = Field(1.0, gt=0)


class TokenVerificationSettings(BaseSettings):
    """What a service that verifies access tokens needs: where service-user publishes its keys
    (GetJwks) and the claims it signs. The same JWT_ISSUER / JWT_AUDIENCE as service-user's."""

    model_config = _CONFIG

    user_service_addr: str = Field("127.0.0.1:50051", validation_alias="USER_SERVICE_ADDR")
    jwt_issuer: str = Field("ecommerce-user-service", min_length=1, validation_alias="JWT_ISSUER")
    jwt_audience: str = Field("ecommerce-api", min_length=1, validation_alias="JWT_AUDIENCE")
    # Unknown `kid`s trigger a refetch at most this often; known keys are refreshed at this age.
    jwks_min_refetch_seconds: float = Field(10.0, ge=0, validation_alias="JWKS_MIN_REFETCH_SECONDS")
    jwks_max_age_seconds: float = Field(300.0, gt=0, validation_alias="JWKS_MAX_AGE_SECONDS")
    jwks_timeout_seconds: float = Field(2.0, gt=0, validation_alias="JWKS_TIMEOUT_SECONDS")


class PostgresSettings(BaseSettings):
    """The Postgres server (no database: each service names its own database field)."""

    model_config = _CONFIG

    postgres_url: str = "postgresql://postgres@127.0.0.1:5432"
    postgres_pool_max: int = Field(10, ge=1)
    # A pooled connection idle this long is closed (the pool opens one again when needed).
    postgres_pool_idle_seconds: float = Field(300.0, gt=0)


class AmqpSettings(BaseSettings):
    """The RabbitMQ broker and the names this deployment uses on it."""

    model_config = _CONFIG

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    events_exchange: str = "ecommerce.events"
    queue_prefix: str = ""
    # Handler attempts of one event before the consumer dead-letters it (outages excepted).
    delivery_limit: int = Field(5, ge=1)
    # A service's handlers running at once (messages taken from the queue ahead of acks).
    consumer_prefetch: int = Field(32, ge=1, le=1000)
    # Published outbox rows and processed inbox ids are kept this long (the inbox must outlive
    # any redelivery, a re-driven dead letter included).
    outbox_retention_hours: float = Field(24.0, gt=0)
    inbox_retention_days: float = Field(14.0, gt=0)
    # Events are published by the process that committed them; the relay publishes what that
    # did not (a crash, a broker away) once the row is this old, and looks twice as often.
    outbox_relay_grace_seconds: float = Field(2.0, gt=0, le=60)


class RedisSettings(BaseSettings):
    """The Redis server and the key prefix (tests isolate with it)."""

    model_config = _CONFIG

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = ""


S = TypeVar("S", bound=BaseSettings)


def _variable_name(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    if not loc:
        return "settings"
    head = str(loc[0])
    field = cls.model_fields.get(head)
    if field is not None and isinstance(field.validation_alias, str):
        head = field.validation_alias
    return head.upper()


_SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "DSN", "URL")


def _may_echo_input(cls: type[BaseSettings], loc: tuple[int | str, ...], name: str) -> bool:
    """Whether the bad value may be shown: never for a secret, nor for a whole-model error (whose
    input is every variable), nor for URLs and DSNs (they carry passwords)."""
    if not loc:
        return False
    field = cls.model_fields.get(str(loc[0]))
    if field is not None and "Secret" in repr(field.annotation):
        return False
    return not any(word in name for word in _SECRET_WORDS)


def _describe(cls: type[BaseSettings], error: Any) -> str:
    loc = tuple(error.get("loc", ()))
    name = _variable_name(cls, loc)
    if error.get("type") == "missing":
        return f"{name} is required"
    if _may_echo_input(cls, loc, name):
        return f"{name}: {error.get('msg')} (got {error.get('input')!r})"
    return f"{name}: {error.get('msg')}"


def describe_validation_error(cls: type[BaseSettings], exc: ValidationError) -> str:
    """One line naming every offending variable."""
    return "; ".join(_describe(cls, error) for error in exc.errors())


def load_settings(cls: type[S]) -> S:
    """Build the settings from the environment, or print one line to stderr and exit 2."""
    service = getattr(cls, "service_name", cls.__name__)
    try:
        return cls()
    except ValidationError as exc:
        message = describe_validation_error(cls, exc)
    except SettingsError as exc:
        message = str(exc).replace("\n", " ")
    sys.stderr.write(f"{service}: configuration error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)
