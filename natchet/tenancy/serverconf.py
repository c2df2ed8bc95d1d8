"""The NATS server side of tenancy: the engine's keys and the generated server config.

:class:`NatsAuth` holds what the engine needs to run NATS in operator mode: the operator
key that signs every account, the keys of the system, auth-callout and engine accounts, the
callout user's key, and one secret from which every tenant's two account keys are derived
(so creating a tenant stores no new secret). It is written as a ``0600`` JSON file next to
the generated ``nats-server.conf``; whoever holds it can act as any tenant.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import attrs

from eventstore import ConfigError, NatsOptions, tls_context
from natchet.tenancy import jwt
from natchet.tenancy.accounts import (
    DENY_ALL,
    auth_account_claims,
    engine_account_claims,
    operator_claims,
    system_account_claims,
    user_claims,
)
from natchet.tenancy.tlsgen import TlsFiles

AUTH_FILE = "natchet-auth.json"
CONFIG_FILE = "nats-server.conf"
RESOLVER_DIR = "jwt"
FORMAT = 2  # operator mode, an account per tenant


@attrs.frozen
class NatsAuth:
    operator_seed: str = attrs.field(repr=False)
    system_seed: str = attrs.field(repr=False)
    auth_seed: str = attrs.field(repr=False)
    engine_seed: str = attrs.field(repr=False)
    callout_seed: str = attrs.field(repr=False)
    tenant_secret: str = attrs.field(repr=False)
    tls: TlsFiles | None = None
    format: int = FORMAT

    @classmethod
    def generate(cls, tls: TlsFiles | None = None) -> NatsAuth:
        return cls(
            operator_seed=jwt.new_seed(jwt.OPERATOR),
            system_seed=jwt.new_seed(jwt.ACCOUNT),
            auth_seed=jwt.new_seed(jwt.ACCOUNT),
            engine_seed=jwt.new_seed(jwt.ACCOUNT),
            callout_seed=jwt.new_seed(jwt.USER),
            tenant_secret=secrets.token_urlsafe(32),
            tls=tls,
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(attrs.asdict(self), f, indent=2)

    @classmethod
    def load(cls, path: Path) -> NatsAuth:
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ConfigError(
                    f"the NATS auth file {path} is from an older natchet (one shared "
                    "account): write a new one with `natchet nats-config DIR` (a dev stack "
                    "does this itself)"
                )
            tls = data.pop("tls", None)
            return cls(**data, tls=TlsFiles(**tls) if tls else None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot read the NATS auth file {path}: {exc}") from None

    # -- keys --------------------------------------------------------------------------

    @property
    def system_account(self) -> str:
        return jwt.public_key(self.system_seed)

    @property
    def auth_account(self) -> str:
        return jwt.public_key(self.auth_seed)

    @property
    def engine_account(self) -> str:
        return jwt.public_key(self.engine_seed)

    def tenant_seed(self, tenant: str) -> str:
        """The key of the account tenant users are placed in."""
        return jwt.derive_seed(self.tenant_secret, f"tenant:{tenant}", jwt.ACCOUNT)

    def log_seed(self, tenant: str) -> str:
        """The key of the account that holds the tenant's log (the engine's side)."""
        return jwt.derive_seed(self.tenant_secret, f"log:{tenant}", jwt.ACCOUNT)

    def log_account(self, tenant: str) -> str:
        """That account's public key: also its name, as the server's monitoring shows it."""
        return jwt.public_key(self.log_seed(tenant))

    # -- what the server is configured with ---------------------------------------------

    def operator_jwt(self) -> str:
        claims = operator_claims(jwt.public_key(self.operator_seed), self.system_account)
        return jwt.encode(claims, self.operator_seed)

    def preload(self) -> dict[str, str]:
        """The accounts the server knows from its config: system, auth callout, engine."""
        callout_user = jwt.public_key(self.callout_seed)
        claims = [
            system_account_claims(self.system_account),
            auth_account_claims(self.auth_account, callout_user),
            engine_account_claims(self.engine_account),
        ]
        return {c["sub"]: jwt.encode(c, self.operator_seed) for c in claims}

    def sentinel(self) -> str:
        """The bearer user a client presenting only a token connects as: it may do nothing,
        and its account sends it to the callout, which places it in its tenant's account."""
        user = jwt.public_key(jwt.new_seed(jwt.USER))
        claims = user_claims(user, "natchet-sentinel", DENY_ALL, bearer=True)
        return jwt.encode(claims, self.auth_seed)

    # -- the engine's own connections ----------------------------------------------------

    def credentials(self, account_seed: str, name: str) -> str:
        """``.creds`` text for a new user of the account ``account_seed`` may sign for."""
        user_seed = jwt.new_seed(jwt.USER)
        claims = user_claims(jwt.public_key(user_seed), name, {})
        return jwt.creds(jwt.encode(claims, account_seed), user_seed)

    def options(self, url: str, name: str, role: str) -> NatsOptions:
        """Connection options for the engine's ``engine``, ``callout`` or ``system`` user,
        or ``log:<tenant>`` (the engine in a tenant's log account)."""
        if role == "callout":
            user_seed = self.callout_seed
            claims = user_claims(jwt.public_key(user_seed), name, {})
            creds = jwt.creds(jwt.encode(claims, self.auth_seed), user_seed)
        elif role.startswith("log:"):
            creds = self.credentials(self.log_seed(role.removeprefix("log:")), name)
        else:
            seed = {"engine": self.engine_seed, "system": self.system_seed}[role]
            creds = self.credentials(seed, name)
        tls = None
        if self.tls is not None:
            tls = tls_context(self.tls.ca, self.tls.client_cert, self.tls.client_key)
        return NatsOptions(url=url, name=name, creds=creds, tls=tls)


def _q(text: str) -> str:
    return json.dumps(text)


def server_config(auth: NatsAuth, *, resolver_dir: Path, store_dir: Path | None = None) -> str:
    """A nats-server config: operator mode with the full resolver (accounts are pushed at
    run time), the default sentinel for token-only clients, JetStream, optional TLS."""
    lines = [
        "# generated by natchet (docs/tenancy.md): operator mode, an account per tenant,",
        "# tenants authenticated by the engine through auth callout",
        f"operator: {_q(auth.operator_jwt())}",
        f"system_account: {_q(auth.system_account)}",
        "resolver {",
        "  type: full",
        f"  dir: {_q(str(resolver_dir))}",
        "  allow_delete: false",
        '  interval: "2m"',
        '  timeout: "5s"',
        "}",
        "resolver_preload {",
        *(f"  {account}: {_q(token)}" for account, token in auth.preload().items()),
        "}",
        f"default_sentinel: {_q(auth.sentinel())}",
    ]
    jetstream = ["jetstream {"]
    if store_dir is not None:
        jetstream.append(f"  store_dir: {_q(str(store_dir))}")
    lines += [*jetstream, "}"]
    if auth.tls is not None:
        tls = auth.tls
        lines += [
            "tls {",
            f"  cert_file: {_q(tls.server_cert)}",
            f"  key_file: {_q(tls.server_key)}",
            f"  ca_file: {_q(tls.ca)}",
            f"  verify: {'true' if tls.verify_clients else 'false'}",
            "  timeout: 3",
            "}",
        ]
    return "\n".join(lines) + "\n"


def write_server_files(
    directory: Path,
    auth: NatsAuth,
    *,
    store_dir: Path | None = None,
    resolver_dir: Path | None = None,
) -> Path:
    """Write ``nats-server.conf`` and ``natchet-auth.json`` (both 0600); return the config.
    The resolver keeps the accounts pushed at run time in ``resolver_dir`` (default
    ``directory/jwt``): keep it with the JetStream store."""
    directory.mkdir(parents=True, exist_ok=True)
    auth.save(directory / AUTH_FILE)
    resolver = resolver_dir if resolver_dir is not None else directory / RESOLVER_DIR
    resolver.mkdir(parents=True, exist_ok=True)
    config = directory / CONFIG_FILE
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(server_config(auth, resolver_dir=resolver, store_dir=store_dir))
    return config
