"""The verdicts on a worker's vitals, and its health settings, without servers."""

from __future__ import annotations

import pytest

from eventstore import ConfigError
from schemas import protocol
from worker.vitals import TICK_S, Exit, HealthSettings, Vitals


def test_defaults_are_hatchets() -> None:
    s = HealthSettings.from_env({})
    assert (s.enabled, s.port, s.loop_unhealthy_s) == (False, 8001, 5.0)
    assert (s.loop_exit_s, s.nats_unhealthy_s, s.nats_exit_s) == (60.0, 10.0, 60.0)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"HATCHET_CLIENT_WORKER_HEALTHCHECK_ENABLED": "maybe"}, "use true or false"),
        ({"HATCHET_CLIENT_WORKER_HEALTHCHECK_PORT": "http"}, "use a port number"),
        ({"HATCHET_CLIENT_WORKER_HEALTHCHECK_PORT": "70000"}, "use a port"),
        ({"NATCHET_WORKER_NATS_LOST_EXIT_SECONDS": "soon"}, "number of seconds"),
        ({"NATCHET_WORKER_NATS_LOST_EXIT_SECONDS": "-1"}, "0: never"),
        ({"NATCHET_WORKER_LOOP_BLOCKED_EXIT_SECONDS": "nan"}, "number of seconds"),
        (
            {"HATCHET_CLIENT_WORKER_HEALTHCHECK_EVENT_LOOP_BLOCK_THRESHOLD_SECONDS": "0"},
            "above 0",
        ),
    ],
)
def test_bad_settings_are_one_line_config_errors(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        HealthSettings.from_env(env)
    assert "\n" not in str(info.value)


def test_a_blocked_loop_is_unhealthy_past_its_bound_and_fatal_past_the_exit_bound() -> None:
    v = Vitals(HealthSettings(loop_unhealthy_s=5, loop_exit_s=60))
    v.tick(True, now=100.0)
    assert v.check(now=100.0 + TICK_S + 4.9).healthy
    late = v.check(now=100.0 + TICK_S + 5.1)
    assert not late.healthy and late.fatal is None
    assert "blocked" in late.problems[0]
    dead = v.check(now=100.0 + TICK_S + 61)
    assert dead.fatal is not None and dead.fatal.code == Exit.LOOP_BLOCKED


def test_nats_lost_is_unhealthy_then_fatal_and_a_reconnect_clears_it() -> None:
    v = Vitals(HealthSettings(nats_unhealthy_s=10, nats_exit_s=60))
    v.tick(False, now=0.0)
    v.tick(False, now=11.0)
    v11 = v.check(now=11.0)
    assert not v11.nats_connected and not v11.healthy and v11.fatal is None
    v.tick(True, now=12.0)
    assert v.check(now=12.0).healthy
    v.tick(False, now=20.0)
    v.tick(False, now=81.0)
    fatal = v.check(now=81.0).fatal
    assert fatal is not None and fatal.code == Exit.NATS_LOST


def test_an_exit_bound_of_zero_never_exits() -> None:
    v = Vitals(HealthSettings(nats_exit_s=0, loop_exit_s=0))
    v.tick(False, now=0.0)
    assert v.check(now=10_000.0).fatal is None


def test_protocols_the_engine_serves() -> None:
    assert protocol.accepts(protocol.PROTOCOL)
    assert protocol.accepts(protocol.UNANNOUNCED)  # older workers spoke protocol 1
    assert not protocol.accepts(protocol.PROTOCOL + 1)
    line = protocol.refusal(protocol.PROTOCOL + 1, "9.0.0")
    assert f"accepts protocol {protocol.describe_accepted()}" in line and "\n" not in line
    assert protocol.release("0.10.2rc1") == (0, 10, 2) and protocol.release("") == ()
