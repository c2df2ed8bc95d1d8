"""NATS nkeys and JWTs as natchet writes them (the server accepting them is what the tenancy
tests show; here: the format, and that tampering is caught)."""

from __future__ import annotations

import base64

import orjson
import pytest

from natchet.tenancy import jwt
from natchet.tenancy.accounts import user_claims


def _claims(token: str) -> dict[str, object]:
    body = token.split(".")[1]
    decoded = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert isinstance(decoded, dict)
    return decoded


def test_keys_have_their_roles_and_derive_the_same_every_time() -> None:
    assert jwt.public_key(jwt.new_seed(jwt.OPERATOR)).startswith("O")
    assert jwt.public_key(jwt.new_seed(jwt.ACCOUNT)).startswith("A")
    assert jwt.public_key(jwt.new_seed(jwt.USER)).startswith("U")
    one = jwt.derive_seed("secret", "tenant:acme", jwt.ACCOUNT)
    assert one == jwt.derive_seed("secret", "tenant:acme", jwt.ACCOUNT)
    assert one != jwt.derive_seed("secret", "log:acme", jwt.ACCOUNT)
    assert one != jwt.derive_seed("other", "tenant:acme", jwt.ACCOUNT)


def test_a_jwt_decodes_to_its_claims_signed_by_its_issuer() -> None:
    account = jwt.new_seed(jwt.ACCOUNT)
    user = jwt.public_key(jwt.new_seed(jwt.USER))
    token = jwt.encode(user_claims(user, "acme/t1", {}), account)
    head = orjson.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert head == {"typ": "JWT", "alg": "ed25519-nkey"}
    claims = jwt.decode(token)
    assert claims == _claims(token)
    assert claims["iss"] == jwt.public_key(account) and claims["sub"] == user
    assert isinstance(claims["iat"], int) and len(str(claims["jti"])) == 52
    assert claims["nats"]["type"] == "user" and claims["nats"]["version"] == 2  # type: ignore[index]


def test_a_tampered_or_foreign_jwt_does_not_verify() -> None:
    account = jwt.new_seed(jwt.ACCOUNT)
    token = jwt.encode({"sub": jwt.public_key(account), "nats": {}}, account)
    head, body, sig = token.split(".")
    forged = dict(_claims(token), sub="UAAAA")
    forged_body = base64.urlsafe_b64encode(orjson.dumps(forged)).decode().rstrip("=")
    for bad in (f"{head}.{forged_body}.{sig}", f"{head}.{body}.{sig[:-4]}AAAA", "a.b", ""):
        with pytest.raises(jwt.NkeyError):
            jwt.decode(bad)
    with pytest.raises(jwt.NkeyError):
        jwt.decode_public("AXXXX")
    with pytest.raises(jwt.NkeyError):
        jwt.public_key("not a seed")
