"""The partition count of a tenant's dispatch as an engine setting (issue 16): the flag,
then ``NATCHET_DISPATCH_PARTITIONS``, 1 by default, bounded like the dispatcher's own."""

from __future__ import annotations

import pytest

from dispatcher.partition import MAX_PARTITIONS, Partition
from natchet.cli import build_parser
from natchet.config import MAX_PARTITIONS as CONFIG_MAX_PARTITIONS
from natchet.config import EngineSettings, partitions_from
from schemas.errors import ConfigError


def test_the_partition_setting_is_one_to_the_dispatchers_bound() -> None:
    assert CONFIG_MAX_PARTITIONS == MAX_PARTITIONS
    assert partitions_from(None, "x") == partitions_from("", "x") == 1
    assert partitions_from("8", "x") == 8
    assert partitions_from(MAX_PARTITIONS, "x") == MAX_PARTITIONS
    for bad in ("0", "65", "-1", "two", "1.5"):
        with pytest.raises(ConfigError):
            partitions_from(bad, "--dispatch-partitions")
    with pytest.raises(ValueError):
        Partition(0, CONFIG_MAX_PARTITIONS + 1)


def test_the_engine_setting_comes_from_the_flag_then_the_environment() -> None:
    env = {"NATCHET_NATS_URL": "nats://x", "NATCHET_DATABASE_URL": "postgresql://x"}
    assert EngineSettings.resolve(env=env).dispatch_partitions == 1
    env["NATCHET_DISPATCH_PARTITIONS"] = "4"
    assert EngineSettings.resolve(env=env).dispatch_partitions == 4
    assert EngineSettings.resolve(env=env, dispatch_partitions=2).dispatch_partitions == 2
    env["NATCHET_DISPATCH_PARTITIONS"] = "100"
    with pytest.raises(ConfigError, match="NATCHET_DISPATCH_PARTITIONS"):
        EngineSettings.resolve(env=env)
    with pytest.raises(ValueError):
        EngineSettings("nats://x", "postgresql://x", dispatch_partitions=0)


def test_both_long_running_commands_take_the_flag() -> None:
    for command in ("engine", "dev"):
        args = build_parser().parse_args([command, "--dispatch-partitions", "4"])
        assert args.dispatch_partitions == 4
