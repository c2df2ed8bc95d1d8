"""NATS auth callout: the server asks the engine about every tenant connection.

A client that presents only a token connects as the server's default sentinel, a bearer
user of the ``natchet-auth`` account; that account's callout sends the server a signed
authorization request (``$SYS.REQ.USER.AUTH``) carrying the client's CONNECT options. The
service checks ``auth_token`` against the folded token table
(:class:`~natchet.tenancy.view.TenancyView`) and answers with a user JWT signed by the
tenant account's key, which places the user in that account with
:func:`~natchet.tenancy.accounts.tenant_permissions`, expiring when the token does.
Revoking a token kicks its live connections through the system account
(``$SYS.REQ.SERVER.<id>.KICK``); their reconnects are then refused. Disconnect events
prune what it remembers of connections.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson

from eventstore import (
    Connection,
    Message,
    NatchetError,
    Service,
    Subscription,
    ask,
    subscribe,
)
from natchet.tenancy import jwt
from natchet.tenancy.accounts import tenant_permissions, user_claims
from natchet.tenancy.provision import Provisioner
from natchet.tenancy.serverconf import NatsAuth
from natchet.tenancy.state import TokenRecord
from natchet.tenancy.view import TenancyView
from schemas.tenancy import SystemMessage, TokenError, TokenRevoked, parse_token

log = logging.getLogger(__name__)

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
DISCONNECTS = "$SYS.ACCOUNT.*.DISCONNECT"
# The server gives up on a callout after about 2 s; a tenant created a moment ago is set up
# well within that.
PROVISION_WAIT_S = 1.5
MAX_CONCURRENT = 256

ClientRef = tuple[str, int]  # (server id, client id)

# Told of every answer: (tenant, "accepted" or "refused", reason). ``tenant`` is the tenant the
# token names when that tenant exists, else "" (a label: never a name a client made up).
OnDecision = Callable[[str, str, str], None]


def tenant_user_claims(user_nkey: str, record: TokenRecord) -> dict[str, Any]:
    expires = None
    if record.expires_at is not None:
        expires = int(dt.datetime.fromisoformat(record.expires_at).timestamp())
    name = f"{record.tenant}/{record.token_id}"
    return user_claims(user_nkey, name, tenant_permissions(record.tenant), expires_at=expires)


def response_claims(
    user_nkey: str, server_id: str, *, user_jwt: str | None = None, error: str | None = None
) -> dict[str, Any]:
    nats_part: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if user_jwt is not None:
        nats_part["jwt"] = user_jwt
    if error is not None:
        nats_part["error"] = error
    return {"sub": user_nkey, "aud": server_id, "nats": nats_part}


class CalloutService(Service):
    """Answers the server's authorization requests; kicks revoked tokens' connections.

    ``nc`` is the callout user's connection (auth account); ``system`` a system-account
    connection for kicks and disconnect events (without it revoked connections live on
    until they reconnect)."""

    def __init__(
        self,
        nc: Connection,
        view: TenancyView,
        auth: NatsAuth,
        provisioner: Provisioner,
        system: Connection | None = None,
        on_decision: OnDecision | None = None,
    ) -> None:
        super().__init__()
        self.name = "auth callout"
        self.on_decision = on_decision
        self.nc = nc
        self.view = view
        self.auth = auth
        self.provisioner = provisioner
        self.system = system
        # token id -> the connections it authorized, and back
        self.connections: dict[str, set[ClientRef]] = defaultdict(set)
        self._owner: dict[ClientRef, str] = {}
        self.kicked = asyncio.Event()
        # Requests are answered concurrently: one that waits (a tenant still being set up,
        # a fold catching up) must not hold up every other tenant's connects.
        self._answering: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    async def _serve(self) -> None:
        # Revocations are heard while the callout runs, and not after.
        self.view.listeners.append(self._on_system)
        subs: list[Subscription] = []
        try:
            subs.append(await subscribe(self.nc, AUTH_SUBJECT, self._on_request))
            if self.system is not None:
                subs.append(await subscribe(self.system, DISCONNECTS, self._on_disconnect))
            await self.stopping.wait()
        finally:
            self.view.listeners.remove(self._on_system)
            for sub in subs:
                await sub.unsubscribe()
            for task in list(self._answering):
                task.cancel()
            await asyncio.gather(*self._answering, return_exceptions=True)

    async def _on_request(self, msg: Message) -> None:
        task = asyncio.create_task(self._answer(msg))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, msg: Message) -> None:
        async with self._slots:
            await self._handle(msg)

    async def _handle(self, msg: Message) -> None:
        try:
            request = jwt.decode(msg.data.decode())
            body = request["nats"]
            user_nkey = str(body["user_nkey"])
            server_id = str(body["server_id"]["id"])
        except (jwt.NkeyError, KeyError, TypeError, UnicodeDecodeError) as exc:
            log.error("auth callout: unreadable authorization request: %s", exc)
            return
        if request.get("iss") != server_id:
            log.error("auth callout: request not signed by server %s", server_id)
            return
        token = str((body.get("connect_opts") or {}).get("auth_token") or "")
        client = body.get("client_info") or {}
        try:
            record = await self._authenticate(token)
            await self._provisioned(record.tenant)
        except TokenError as exc:
            log.warning(
                "auth callout: refused %s from %s: %s",
                client.get("name") or "client",
                client.get("host"),
                exc,
            )
            claims = response_claims(user_nkey, server_id, error=str(exc))
            self._decided(self._claimed_tenant(token), "refused", exc.reason)
        else:
            self._decided(record.tenant, "accepted", "token")
            seed = self.auth.tenant_seed(record.tenant)
            user_jwt = jwt.encode(tenant_user_claims(user_nkey, record), seed)
            claims = response_claims(user_nkey, server_id, user_jwt=user_jwt)
            if isinstance(client.get("id"), int):
                self._remember(record.token_id, (server_id, client["id"]))
        try:
            await msg.respond(jwt.encode(claims, self.auth.auth_seed).encode())
        except NatchetError as exc:
            log.error("auth callout: could not answer the server: %s", exc)

    def _decided(self, tenant: str, outcome: str, reason: str) -> None:
        if self.on_decision is not None:
            self.on_decision(tenant, outcome, reason)

    def _claimed_tenant(self, token: str) -> str:
        """The tenant a refused token names, if it is one of the engine's; else ""."""
        try:
            tenant = parse_token(token).tenant
        except TokenError:
            return ""
        return tenant if tenant in self.view.state.tenants else ""

    async def _authenticate(self, token: str) -> TokenRecord:
        if not token:
            raise TokenError("no token (set HATCHET_CLIENT_TOKEN)", "no_token")
        try:
            return self.view.state.authenticate(token)
        except TokenError:
            # A token created a moment ago may not be folded yet: catch up once, then decide.
            if not await self.view.catch_up():
                log.warning("auth callout: the system stream fold is behind")
            return self.view.state.authenticate(token)

    async def _provisioned(self, tenant: str) -> None:
        failed = self.provisioner.failed.get(tenant)
        if failed is not None:
            raise TokenError(f"tenant {tenant} cannot be served: {failed}", "tenant_unavailable")
        try:
            await asyncio.wait_for(self.provisioner.ready(tenant).wait(), PROVISION_WAIT_S)
        except TimeoutError:
            raise TokenError(
                f"tenant {tenant} is still being set up: retry in a moment", "tenant_unavailable"
            ) from None

    def _remember(self, token_id: str, conn: ClientRef) -> None:
        self.connections[token_id].add(conn)
        self._owner[conn] = token_id

    def _forget(self, conn: ClientRef) -> None:
        token_id = self._owner.pop(conn, None)
        if token_id is not None:
            conns = self.connections.get(token_id)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self.connections[token_id]

    async def _on_disconnect(self, msg: Message) -> None:
        try:
            event = orjson.loads(msg.data)
            conn = (str(event["server"]["id"]), int(event["client"]["id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        self._forget(conn)

    async def _on_system(self, message: SystemMessage) -> None:
        if isinstance(message, TokenRevoked):
            await self.kick(message.token_id)

    async def kick(self, token_id: str) -> int:
        """Close every connection ``token_id`` authorized; return how many were kicked."""
        targets = self.connections.pop(token_id, set())
        for conn in targets:
            self._owner.pop(conn, None)
        if self.system is None:
            if targets:
                log.warning("token %s revoked; no system connection to kick its clients", token_id)
            return 0
        kicked = 0
        for server_id, cid in targets:
            try:
                reply = await ask(
                    self.system,
                    f"$SYS.REQ.SERVER.{server_id}.KICK",
                    orjson.dumps({"cid": cid}),
                    timeout_s=2,
                )
            except NatchetError as exc:
                log.error("could not kick client %d of revoked token %s: %s", cid, token_id, exc)
                continue
            answer = orjson.loads(reply.data)
            if isinstance(answer, dict) and answer.get("error"):
                log.info("kick client %d: %s", cid, answer["error"])  # already gone
            else:
                kicked += 1
        if targets:
            log.info("token %s revoked: kicked %d connection(s)", token_id, kicked)
            self.kicked.set()
        return kicked
