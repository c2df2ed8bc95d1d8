"""Settings, validated when built: the client's, read from ``HATCHET_CLIENT_*`` (and
``NATCHET_*``) variables, and a worker's (name, slots, grace), from its arguments and
``NATCHET_WORKER_GRACE_SECONDS``."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping

import attrs

from eventstore import ConfigError, NatsOptions, TaskConsumerSettings, tls_context
from schemas.subjects import Scope, SubjectError
from schemas.tenancy import TOKEN_PREFIX, Token, TokenError, inbox_prefix, parse_token
from worker.vitals import HealthSettings

TLS_STRATEGIES = ("none", "tls", "mtls")
GRACE_ENV = "NATCHET_WORKER_GRACE_SECONDS"
DEFAULT_GRACE_S = 30.0


@attrs.frozen
class ClientSettings:
    """Where the engine's NATS is, and which tenant and namespace this client works in."""

    nats_url: str
    tenant: str
    namespace: str = "default"
    token: str | None = None
    tls_strategy: str = "none"
    tls_root_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_server_name: str | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.tenant, self.namespace)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: str) -> ClientSettings:
        env = dict(os.environ if env is None else env)
        env.update({k: v for k, v in overrides.items() if v is not None})
        token = env.get("HATCHET_CLIENT_TOKEN") or None
        issued = _read_token(token)
        url = (
            env.get("HATCHET_CLIENT_HOST_PORT")
            or (issued.url if issued else None)
            or env.get("NATCHET_NATS_URL")
        )
        if not url:
            raise ConfigError(
                "HATCHET_CLIENT_HOST_PORT is not set: set it to the engine's NATS address "
                "(`natchet dev` prints it), e.g. 127.0.0.1:4222, or set HATCHET_CLIENT_TOKEN"
            )
        tenant = env.get("HATCHET_CLIENT_TENANT_ID") or (issued.tenant if issued else None)
        tenant = tenant or env.get("NATCHET_TENANT")
        if not tenant:
            raise ConfigError(
                "HATCHET_CLIENT_TENANT_ID is not set: set it to your tenant (`natchet dev` "
                "prints it), or set HATCHET_CLIENT_TOKEN"
            )
        if issued is not None and issued.tenant != tenant:
            raise ConfigError(
                f"HATCHET_CLIENT_TOKEN is for tenant {issued.tenant!r} but "
                f"HATCHET_CLIENT_TENANT_ID is {tenant!r}: unset one of them"
            )
        strategy = env.get("HATCHET_CLIENT_TLS_STRATEGY", "none").lower()
        if strategy not in TLS_STRATEGIES:
            raise ConfigError(
                f"HATCHET_CLIENT_TLS_STRATEGY={strategy!r}: use one of {', '.join(TLS_STRATEGIES)}"
            )
        settings = cls(
            nats_url=url,
            tenant=tenant,
            namespace=env.get("HATCHET_CLIENT_NAMESPACE") or "default",
            token=token,
            tls_strategy=strategy,
            tls_root_ca_file=env.get("HATCHET_CLIENT_TLS_ROOT_CA_FILE") or None,
            tls_cert_file=env.get("HATCHET_CLIENT_TLS_CERT_FILE") or None,
            tls_key_file=env.get("HATCHET_CLIENT_TLS_KEY_FILE") or None,
            tls_server_name=env.get("HATCHET_CLIENT_TLS_SERVER_NAME") or None,
        )
        try:
            settings.scope  # noqa: B018 - validates tenant and namespace
        except SubjectError as exc:
            raise ConfigError(str(exc)) from None
        return settings

    def nats_options(self, name: str) -> NatsOptions:
        return NatsOptions(
            url=self.nats_url,
            name=name,
            token=self.token,
            tls=self._tls_context(),
            tls_hostname=self.tls_server_name,
            inbox_prefix=inbox_prefix(self.tenant),
        )

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls_strategy == "none":
            return None
        if self.tls_strategy == "mtls":
            if not (self.tls_cert_file and self.tls_key_file):
                raise ConfigError(
                    "HATCHET_CLIENT_TLS_STRATEGY=mtls needs HATCHET_CLIENT_TLS_CERT_FILE and "
                    "HATCHET_CLIENT_TLS_KEY_FILE"
                )
            return tls_context(self.tls_root_ca_file, self.tls_cert_file, self.tls_key_file)
        return tls_context(self.tls_root_ca_file)


def _read_token(token: str | None) -> Token | None:
    """A natchet token names its tenant and NATS address; other tokens are passed as-is."""
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    try:
        return parse_token(token)
    except TokenError as exc:
        raise ConfigError(f"HATCHET_CLIENT_TOKEN: {exc}") from None


@attrs.frozen
class WorkerSettings:
    """One worker: where it connects (``client``), its name, how many steps it runs at once
    (``max_runs``), and how long running steps may finish after a shutdown begins
    (``grace_s``) before they are handed back to other workers."""

    client: ClientSettings
    name: str
    max_runs: int = 100
    grace_s: float = DEFAULT_GRACE_S
    consumer: TaskConsumerSettings = attrs.field(factory=TaskConsumerSettings)
    # The health endpoint and the bounds that make the worker unhealthy, or end it.
    health: HealthSettings = attrs.field(factory=HealthSettings)

    def __attrs_post_init__(self) -> None:
        if not self.name.strip():
            raise ConfigError("a worker needs a name: hatchet.worker(NAME)")
        if self.max_runs < 1:
            raise ConfigError(f"max_runs must be at least 1, not {self.max_runs}")
        if self.grace_s < 0:
            raise ConfigError(f"grace_seconds must be >= 0, not {self.grace_s}")

    @classmethod
    def resolve(
        cls,
        client: ClientSettings,
        name: str,
        *,
        max_runs: int | None = None,
        grace_s: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> WorkerSettings:
        """Arguments first, then ``NATCHET_WORKER_GRACE_SECONDS`` (and the health variables,
        :class:`~worker.vitals.HealthSettings`), then the defaults."""
        env = os.environ if env is None else env
        if grace_s is None:
            raw = env.get(GRACE_ENV)
            try:
                grace_s = DEFAULT_GRACE_S if raw in (None, "") else float(raw)
            except ValueError:
                raise ConfigError(f"{GRACE_ENV}={raw!r}: use a number of seconds") from None
        health = HealthSettings.from_env(env)
        return cls(client, name, max_runs=max_runs or 100, grace_s=grace_s, health=health)

    @property
    def scope(self) -> Scope:
        return self.client.scope
