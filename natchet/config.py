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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


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
