"""Settings for the engine and the CLI: flags, then ``NATCHET_*`` variables, then the file
``natchet dev`` writes (``.natchet/dev.env``), so CLI commands find a running dev stack."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs

from eventstore import ConfigError, NatsOptions
from schemas.subjects import SubjectError, check_tenant

if TYPE_CHECKING:
    from natchet.tenancy.serverconf import NatsAuth

DEFAULT_DATA_DIR = Path(".natchet")
DEV_ENV_FILE = "dev.env"
DEFAULT_TENANT = "dev"
DEFAULT_METRICS_HOST = "0.0.0.0"
DEFAULT_READY_MAX_LAG_S = 30.0

# What an engine process runs per tenant: both components, or one of them (``natchet
# engine`` runs the dispatcher and starts a second process for the projector).
Role = Literal["all", "dispatch", "project"]
ROLES: tuple[Role, ...] = ("all", "dispatch", "project")


def read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"{path}:{n}: expected KEY=VALUE, got {raw!r}")
        out[key.strip()] = value.strip()
    return out


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Replace ``path`` at once (a file beside it, renamed over it): a reader never sees
    it empty or half written. A CLI command, or a second ``natchet dev`` checking whose
    the data directory is, read it while ``natchet dev`` writes it; a test read it empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def layered_env(data_dir: Path = DEFAULT_DATA_DIR) -> dict[str, str]:
    """The dev stack's env file (if any) overlaid by the real environment."""
    env: dict[str, str] = {}
    dev_file = data_dir / DEV_ENV_FILE
    if dev_file.exists():
        env.update(read_env_file(dev_file))
    env.update(os.environ)
    return env


def resolve_tenant(flag: str | None, env: Mapping[str, str], default: str = DEFAULT_TENANT) -> str:
    """--tenant, else HATCHET_CLIENT_TENANT_ID, else ``default``."""
    return flag or env.get("HATCHET_CLIENT_TENANT_ID") or default


def port_from(value: str | int | None, what: str) -> int | None:
    """A TCP port (0: any free one), or None when not set."""
    if value is None or value == "":
        return None
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{what}: not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what}: a port is 0 to 65535, not {port}")
    return port


def seconds_from(value: str | float | None, what: str, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{what}: not a number of seconds: {value!r}") from None
    if not seconds > 0:
        raise ConfigError(f"{what}: must be more than 0 seconds, not {value}")
    return seconds


MAX_REPLICAS = 5  # JetStream's limit


def _count_from(value: str | int | None, what: str, of: str, most: int, range_: str) -> int:
    """A whole number of ``of``, 1 to ``most``; 1 when not set (``range_`` says the range
    in the error: "streams have 1 to 5 replicas", say)."""
    if value is None or value == "":
        return 1
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"{what}: not a number of {of}: {value!r}") from None
    if not 1 <= count <= most:
        raise ConfigError(f"{what}: {range_}, not {count}")
    return count


def replicas_from(value: str | int | None, what: str) -> int:
    """A stream replica count, 1 to 5 (JetStream's range); 1 when not set."""
    range_ = f"streams have 1 to {MAX_REPLICAS} replicas"
    return _count_from(value, what, "replicas", MAX_REPLICAS, range_)


# dispatcher.partition.MAX_PARTITIONS (a test pins them equal): not imported, so the CLI's
# every command does not load the dispatcher to read its settings.
MAX_PARTITIONS = 64


def partitions_from(value: str | int | None, what: str) -> int:
    """How many partitions a tenant's dispatch has, 1 to ``MAX_PARTITIONS``; 1 when not set."""
    range_ = f"1 to {MAX_PARTITIONS} partitions"
    return _count_from(value, what, "partitions", MAX_PARTITIONS, range_)


def flag_from(value: str | None, what: str, *, default: bool) -> bool:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off; ``default`` when not set."""
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{what}: 1 or 0 (true/false, yes/no, on/off), not {value!r}")


def tenants_from(value: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in value.split(",") if t.strip())
    try:
        return tuple(check_tenant(t) for t in names)
    except SubjectError as exc:
        raise ConfigError(str(exc)) from None


@attrs.frozen
class EngineSettings:
    nats_url: str
    database_url: str
    tenants: tuple[str, ...] = (DEFAULT_TENANT,)
    nats_token: str | None = None
    # Tenancy (docs/tenancy.md): the engine's NATS credentials and callout key, written by
    # `natchet dev` or `natchet nats-config`; and whether to serve every tenant in the log.
    nats_auth_file: str | None = None
    discover_tenants: bool = False
    role: Role = "all"
    # The HTTP port of /metrics, /live and /ready (docs/operating.md): None, none; 0, any
    # free port. ``ready_max_lag_s``: how far behind the log the dispatcher and projector
    # may be (the age of the oldest message not yet handled) and still be ready.
    metrics_port: int | None = None
    metrics_host: str = DEFAULT_METRICS_HOST
    ready_max_lag_s: float = DEFAULT_READY_MAX_LAG_S
    # How many NATS cluster nodes hold each stream the engine creates (docs/scaling.md).
    stream_replicas: int = 1
    # Run a tenant's dispatcher and projector only while holding its lease, so several
    # engines can serve the same tenants (natchet.leases, docs/scaling.md). Off: this
    # engine runs every unit of its tenants, and must be the only one.
    leases: bool = True
    # How many partitions each tenant's dispatch has (issue 16, docs/scaling.md), each a
    # unit of its own. With leases, the first engine's value is recorded per tenant and
    # every engine uses the recorded one (natchet.partitions).
    dispatch_partitions: int = attrs.field(
        default=1, validator=attrs.validators.in_(range(1, MAX_PARTITIONS + 1))
    )

    @property
    def dispatches(self) -> bool:
        return self.role != "project"

    @property
    def projects(self) -> bool:
        return self.role != "dispatch"

    @classmethod
    def resolve(
        cls,
        *,
        nats_url: str | None = None,
        database_url: str | None = None,
        tenants: str | None = None,
        env: Mapping[str, str] | None = None,
        role: Role = "all",
        metrics_port: int | None = None,
        metrics_host: str | None = None,
        ready_max_lag_s: float | None = None,
        stream_replicas: int | None = None,
        dispatch_partitions: int | None = None,
    ) -> EngineSettings:
        env = layered_env() if env is None else env
        nats = nats_url or env.get("NATCHET_NATS_URL")
        db = database_url or env.get("NATCHET_DATABASE_URL")
        missing = [
            name
            for name, value in (("NATCHET_NATS_URL", nats), ("NATCHET_DATABASE_URL", db))
            if not value
        ]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} not set: pass --nats-url/--database-url, export "
                "them, or start `natchet dev` in this directory"
            )
        assert nats and db
        return cls(
            nats_url=nats,
            database_url=db,
            tenants=tenants_from(tenants or env.get("NATCHET_TENANTS") or DEFAULT_TENANT),
            nats_token=env.get("NATCHET_NATS_TOKEN") or None,
            nats_auth_file=env.get("NATCHET_NATS_AUTH_FILE") or None,
            discover_tenants=True,
            role=role,
            metrics_port=port_from(
                metrics_port if metrics_port is not None else env.get("NATCHET_METRICS_PORT"),
                "--metrics-port / NATCHET_METRICS_PORT",
            ),
            metrics_host=metrics_host or env.get("NATCHET_METRICS_HOST") or DEFAULT_METRICS_HOST,
            ready_max_lag_s=seconds_from(
                ready_max_lag_s
                if ready_max_lag_s is not None
                else env.get("NATCHET_READY_MAX_LAG_S"),
                "--ready-max-lag / NATCHET_READY_MAX_LAG_S",
                DEFAULT_READY_MAX_LAG_S,
            ),
            stream_replicas=replicas_from(
                stream_replicas
                if stream_replicas is not None
                else env.get("NATCHET_STREAM_REPLICAS"),
                "--replicas / NATCHET_STREAM_REPLICAS",
            ),
            leases=flag_from(env.get("NATCHET_LEASES"), "NATCHET_LEASES", default=True),
            dispatch_partitions=partitions_from(
                dispatch_partitions
                if dispatch_partitions is not None
                else env.get("NATCHET_DISPATCH_PARTITIONS"),
                "--dispatch-partitions / NATCHET_DISPATCH_PARTITIONS",
            ),
        )

    @property
    def nats_auth(self) -> NatsAuth | None:
        if not self.nats_auth_file:
            return None
        from natchet.tenancy.serverconf import NatsAuth

        return NatsAuth.load(Path(self.nats_auth_file))

    def nats_options(self, name: str) -> NatsOptions:
        if self.nats_auth_file:
            from natchet.tenancy.serverconf import NatsAuth

            return NatsAuth.load(Path(self.nats_auth_file)).options(self.nats_url, name, "engine")
        return NatsOptions(url=self.nats_url, name=name, token=self.nats_token)
