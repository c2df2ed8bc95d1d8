"""NATS auth callout: the server asks the engine about every tenant connection.

The server sends a signed authorization request JWT to ``$SYS.REQ.USER.AUTH`` carrying the
client's CONNECT options; the service checks ``auth_token`` against the folded token table
(:class:`~natchet.tenancy.view.TenancyView`) and answers with a user JWT, signed by the
issuer key, that grants exactly :func:`~natchet.tenancy.permissions.tenant_permissions`
and expires when the token does. Revoking a token kicks its live connections through the
system account (``$SYS.REQ.SERVER.<id>.KICK``); their reconnects are then refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import defaultdict
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from natchet.tenancy.nkeys import KeyPair, NkeyError, decode_jwt, encode_jwt
from natchet.tenancy.permissions import APP_ACCOUNT, tenant_permissions
from natchet.tenancy.view import TenancyView
from schemas.tenancy import SystemMessage, TokenError, TokenRecord, TokenRevoked

log = logging.getLogger(__name__)

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"


def user_claims(user_nkey: str, record: TokenRecord) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": user_nkey,
        "aud": APP_ACCOUNT,
        "name": f"{record.tenant}/{record.token_id}",
        "nats": {
            **tenant_permissions(record.tenant),
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        },
    }
    if record.expires_at is not None:
        claims["exp"] = int(dt.datetime.fromisoformat(record.expires_at).timestamp())
    return claims


def response_claims(
    user_nkey: str, server_id: str, *, jwt: str | None = None, error: str | None = None
) -> dict[str, Any]:
    nats_part: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if jwt is not None:
        nats_part["jwt"] = jwt
    if error is not None:
        nats_part["error"] = error
    return {"sub": user_nkey, "aud": server_id, "nats": nats_part}


class CalloutService:
    """Answers the server's authorization requests; kicks revoked tokens' connections.

    ``nc`` is the callout user's connection (auth account); ``system`` a system-account
    connection used for kicks (optional: without it revoked connections live on until
    they reconnect)."""

    def __init__(
        self, nc: NATS, view: TenancyView, issuer: KeyPair, system: NATS | None = None
    ) -> None:
        self.nc = nc
        self.view = view
        self.issuer = issuer
        self.system = system
        # token id -> {(server id, client id)} of connections it authorized
        self.connections: dict[str, set[tuple[str, int]]] = defaultdict(set)
        self.kicked = asyncio.Event()
        self._stop = asyncio.Event()
        view.listeners.append(self._on_system)

    async def run(self) -> None:
        sub = await self.nc.subscribe(AUTH_SUBJECT, cb=self._handle)
        try:
            await self._stop.wait()
        finally:
            await sub.unsubscribe()

    async def shutdown(self) -> None:
        self._stop.set()

    async def _handle(self, msg: Msg) -> None:
        try:
            request = decode_jwt(msg.data.decode())
            body = request["nats"]
            user_nkey = str(body["user_nkey"])
            server_id = str(body["server_id"]["id"])
        except (NkeyError, KeyError, TypeError, UnicodeDecodeError) as exc:
            log.error("auth callout: unreadable authorization request: %s", exc)
            return
        if request.get("iss") != server_id:
            log.error("auth callout: request not signed by server %s", server_id)
            return
        token = str(
            (body.get("connect_opts") or body.get("client_opts") or {}).get("auth_token") or ""
        )
        client = body.get("client_info") or {}
        try:
            record = await self._authenticate(token)
        except TokenError as exc:
            log.warning(
                "auth callout: refused %s from %s: %s",
                client.get("name") or "client",
                client.get("host"),
                exc,
            )
            claims = response_claims(user_nkey, server_id, error=str(exc))
        else:
            user_jwt = encode_jwt(user_claims(user_nkey, record), self.issuer)
            claims = response_claims(user_nkey, server_id, jwt=user_jwt)
            if isinstance(client.get("id"), int):
                self.connections[record.token_id].add((server_id, client["id"]))
        await msg.respond(encode_jwt(claims, self.issuer).encode())

    async def _authenticate(self, token: str) -> TokenRecord:
        if not token:
            raise TokenError("no token (set HATCHET_CLIENT_TOKEN)")
        try:
            return self.view.state.authenticate(token)
        except TokenError:
            # A token created a moment ago may not be folded yet: catch up once, then decide.
            if not await self.view.catch_up():
                log.warning("auth callout: the system stream fold is behind")
            return self.view.state.authenticate(token)

    async def _on_system(self, message: SystemMessage) -> None:
        if isinstance(message, TokenRevoked):
            await self.kick(message.token_id)

    async def kick(self, token_id: str) -> int:
        """Close every connection ``token_id`` authorized; return how many were kicked."""
        targets = self.connections.pop(token_id, set())
        if self.system is None:
            if targets:
                log.warning("token %s revoked; no system connection to kick its clients", token_id)
            return 0
        kicked = 0
        for server_id, cid in targets:
            try:
                reply = await self.system.request(
                    f"$SYS.REQ.SERVER.{server_id}.KICK", orjson.dumps({"cid": cid}), timeout=2
                )
            except nats.errors.Error as exc:
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
