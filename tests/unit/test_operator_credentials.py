"""Operator credentials (the dashboard's, for every tenant): only the secret's hash is a
record; the fold authenticates the credential, refuses a wrong secret, a revoked one, and a
body that names another credential than its subject."""

from __future__ import annotations

import orjson
import pytest

from natchet.tenancy.state import TenancyState
from schemas.tenancy import (
    OperatorCreated,
    OperatorRevoked,
    TokenError,
    decode_system,
    hash_secret,
    new_operator_credential,
    operator_subject,
    parse_operator_credential,
)


def created() -> tuple[TenancyState, str, str]:
    operator_id, secret, text = new_operator_credential()
    state = TenancyState()
    state.fold(OperatorCreated(operator_id=operator_id, secret_sha256=hash_secret(secret)))
    return state, operator_id, text


def test_a_credential_authenticates_until_revoked() -> None:
    state, operator_id, text = created()
    assert text.startswith("nco_") and parse_operator_credential(text)[0] == operator_id
    assert state.authenticate_operator(text).operator_id == operator_id
    assert state.operator_good(operator_id)
    with pytest.raises(TokenError, match="unknown operator"):
        state.authenticate_operator(text[:-2] + "xx")
    state.fold(OperatorRevoked(operator_id))
    with pytest.raises(TokenError, match="revoked") as exc:
        state.authenticate_operator(text)
    assert exc.value.reason == "revoked" and not state.operator_good(operator_id)


@pytest.mark.parametrize(
    "text", ["", "nco_", "nco_short.x", "nct_abcdef123456.x", "nco_abcdef123456"]
)
def test_what_is_not_a_credential_is_refused(text: str) -> None:
    with pytest.raises(TokenError):
        parse_operator_credential(text)


def test_the_subject_names_the_credential() -> None:
    operator_id, secret, _ = new_operator_credential()
    body = orjson.dumps({"operator_id": operator_id, "secret_sha256": hash_secret(secret)})
    assert isinstance(decode_system(operator_subject(operator_id), body), OperatorCreated)
    with pytest.raises(ValueError, match="names"):
        decode_system(operator_subject("abcdef123456"), body)
    with pytest.raises(ValueError, match="not a system subject"):
        decode_system(f"natchet.system.operators.{operator_id}.renamed", body)
