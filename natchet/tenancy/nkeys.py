"""NATS nkeys and JWTs, just what auth callout needs, on ``cryptography``'s ed25519.

An nkey is base32(prefix byte + 32-byte ed25519 key + crc16), so ``A...`` is an account
public key, ``U...`` a user, ``N...`` a server and ``SA...`` an account seed. A NATS JWT is
``b64url(header).b64url(claims).b64url(ed25519 signature)`` with ``alg: ed25519-nkey``.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import attrs
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PREFIX_SEED = 18 << 3
PREFIX_ACCOUNT = 0
PREFIX_SERVER = 13 << 3
PREFIX_USER = 20 << 3
PREFIXES = {"A": PREFIX_ACCOUNT, "N": PREFIX_SERVER, "U": PREFIX_USER}

JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


class NkeyError(ValueError):
    """A malformed nkey, or a JWT that does not verify."""


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw + _crc16(raw).to_bytes(2, "little")).decode().rstrip("=")


def _unb32(text: str) -> bytes:
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        raise NkeyError(f"not an nkey: {text[:8]}...") from None
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    if len(raw) < 3 or _crc16(body) != crc:
        raise NkeyError(f"bad nkey checksum: {text[:8]}...")
    return body


def encode_public(prefix: int, key: bytes) -> str:
    return _b32(bytes([prefix]) + key)


def decode_public(text: str) -> bytes:
    """The raw ed25519 public key of an ``A``/``N``/``U`` nkey."""
    body = _unb32(text)
    if len(body) != 33 or not text or PREFIXES.get(text[0]) != body[0]:
        raise NkeyError(f"not a public nkey: {text[:8]}...")
    return body[1:]


@attrs.frozen
class KeyPair:
    """An ed25519 key pair with an nkey role (account, user, ...)."""

    prefix: int
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls, prefix: int = PREFIX_ACCOUNT) -> KeyPair:
        return cls(prefix, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: str) -> KeyPair:
        body = _unb32(seed)
        if len(body) != 34 or body[0] & 0xF8 != PREFIX_SEED:
            raise NkeyError("not an nkey seed")
        prefix = ((body[0] & 0x07) << 5) | ((body[1] & 0xF8) >> 3)
        return cls(prefix, Ed25519PrivateKey.from_private_bytes(body[2:]))

    @property
    def seed(self) -> str:
        raw = self.private.private_bytes_raw()
        b1 = PREFIX_SEED | (self.prefix >> 5)
        b2 = (self.prefix & 31) << 3
        return _b32(bytes([b1, b2]) + raw)

    @property
    def public_key(self) -> str:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return encode_public(self.prefix, raw)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_jwt(claims: dict[str, Any], signer: KeyPair) -> str:
    """Sign ``claims`` (``iss`` and ``iat`` are set here; ``jti`` is the claims' hash)."""
    body = {**claims, "iss": signer.public_key, "iat": int(time.time()), "jti": ""}
    body["jti"] = base64.b32encode(hashlib.sha256(orjson.dumps(body)).digest()).decode()[:52]
    head = _b64(orjson.dumps(JWT_HEADER)) + "." + _b64(orjson.dumps(body))
    return head + "." + _b64(signer.sign(head.encode()))


def decode_jwt(token: str) -> dict[str, Any]:
    """Decode a JWT and check it is signed by the nkey in its ``iss``; return its claims."""
    try:
        head, body, sig = token.split(".")
        claims = orjson.loads(_unb64(body))
        key = Ed25519PublicKey.from_public_bytes(decode_public(str(claims["iss"])))
        key.verify(_unb64(sig), f"{head}.{body}".encode())
    except (ValueError, KeyError, TypeError, InvalidSignature, orjson.JSONDecodeError) as exc:
        raise NkeyError(f"JWT does not verify: {exc or type(exc).__name__}") from None
    if not isinstance(claims, dict):
        raise NkeyError("JWT claims are not an object")
    return claims
