"""NATS nkeys and JWTs (v2), on the NATS project's own ``nkeys`` package.

An nkey is base32(role byte + 32-byte ed25519 key + crc16): ``O...`` an operator, ``A...``
an account, ``U...`` a user, ``N...`` a server; seeds start with ``S``. A NATS JWT is
``b64url(header).b64url(claims).b64url(ed25519 signature)`` with ``alg: ed25519-nkey``; its
``jti`` is the base32 SHA-512/256 of the claims with ``jti`` empty, as the Go library
(``nats-io/jwt/v2``) writes it. Signing goes through :mod:`nkeys`; checking a signature uses
PyNaCl (the library :mod:`nkeys` signs with) on the issuer's public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys
import orjson

from schemas.errors import NatchetError

OPERATOR = nkeys.PREFIX_BYTE_OPERATOR
ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
USER = nkeys.PREFIX_BYTE_USER
SERVER = nkeys.PREFIX_BYTE_SERVER
_ROLES = {OPERATOR: "O", ACCOUNT: "A", USER: "U", SERVER: "N"}

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


class NkeyError(NatchetError, ValueError):
    """A malformed nkey or seed, or a JWT that does not verify."""


def new_seed(role: int) -> str:
    """A fresh random seed for an operator, account or user key."""
    return seed_from_bytes(os.urandom(32), role)


def seed_from_bytes(raw: bytes, role: int) -> str:
    """The seed whose private key is ``raw`` (32 bytes), e.g. derived with HMAC."""
    return bytes(nkeys.encode_seed(raw, role)).decode()


def derive_seed(secret: str, label: str, role: int) -> str:
    """A seed that is a pure function of ``secret`` and ``label``: the same key every time,
    so nothing but the secret has to be stored."""
    raw = hmac.new(secret.encode(), label.encode(), hashlib.sha256).digest()
    return seed_from_bytes(raw, role)


def _keypair(seed: str) -> nkeys.KeyPair:
    try:
        return nkeys.from_seed(bytearray(seed.encode()))
    except (nkeys.NkeysError, binascii.Error, ValueError) as exc:
        raise NkeyError(f"not an nkey seed: {type(exc).__name__}") from None


def public_key(seed: str) -> str:
    return bytes(_keypair(seed).public_key).decode()


def sign(seed: str, data: bytes) -> bytes:
    return bytes(_keypair(seed).sign(data))


def sign_nonce(seed: str, nonce: str) -> bytes:
    """The CONNECT ``sig`` for a server nonce, as nats-py's ``signature_cb`` returns it."""
    return base64.b64encode(sign(seed, nonce.encode()))


def decode_public(key: str, role: int | None = None) -> bytes:
    """The raw ed25519 key of a public nkey, checking its checksum (and role)."""
    try:
        raw = base64.b32decode(key + "=" * (-len(key) % 8))
    except (binascii.Error, ValueError):
        raise NkeyError(f"not a public nkey: {key[:8]}...") from None
    body, crc = raw[:-2], raw[-2:]
    if len(body) != 33 or bytes(nkeys.crc16_checksum(body)) != crc:
        raise NkeyError(f"not a public nkey: {key[:8]}...")
    if body[0] not in _ROLES or (role is not None and body[0] != role):
        raise NkeyError(f"unexpected nkey role: {key[:8]}...")
    return bytes(body[1:])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: dict[str, Any], signer_seed: str) -> str:
    """Sign ``claims``: ``iss`` and ``iat`` are set here, and ``jti`` is their hash."""
    body = {**claims, "iss": public_key(signer_seed), "iat": int(time.time()), "jti": ""}
    digest = hashlib.new("sha512_256", orjson.dumps(body)).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = _b64(orjson.dumps(HEADER)) + "." + _b64(orjson.dumps(body))
    return head + "." + _b64(sign(signer_seed, head.encode()))


def decode(token: str) -> dict[str, Any]:
    """The claims of a JWT, once its signature checks out against the key in ``iss``."""
    try:
        head, body, sig = token.split(".")
        claims = orjson.loads(_unb64(body))
        issuer = decode_public(str(claims["iss"]))
        nacl.signing.VerifyKey(issuer).verify(f"{head}.{body}".encode(), _unb64(sig))
    except NkeyError:
        raise
    except (
        ValueError,
        KeyError,
        TypeError,
        binascii.Error,
        nacl.exceptions.BadSignatureError,
        orjson.JSONDecodeError,
    ) as exc:
        raise NkeyError(f"JWT does not verify: {exc or type(exc).__name__}") from None
    if not isinstance(claims, dict):
        raise NkeyError("JWT claims are not an object")
    return claims


def creds(user_jwt: str, user_seed: str) -> str:
    """A ``.creds`` file's text: what ``nats --creds`` and nats-py's ``user_credentials``
    read."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n"
    )
