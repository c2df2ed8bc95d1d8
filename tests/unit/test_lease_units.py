"""The units of the leases (``natchet.leases.Unit``) and their keys: a tenant whose dispatch
is not split keeps the key it always had, a partition has one more token, and a key that is
no unit's (presence, partition counts, anything malformed) names none."""

from __future__ import annotations

import pytest

from dispatcher.partition import MAX_PARTITIONS
from natchet.leases import Leases, Unit


def test_a_whole_unit_keeps_the_key_it_always_had() -> None:
    assert Unit("acme", "dispatch").key == "dispatch.acme"
    assert Unit("acme", "project").key == "project.acme"
    assert Unit("acme", "dispatch", 0).key == "dispatch.acme.0"
    assert Unit("acme", "dispatch", 63).key == "dispatch.acme.63"


def test_every_unit_round_trips_through_its_key() -> None:
    units = [Unit("t-1", "dispatch"), Unit("t_2", "project")]
    units += Unit.units("acme", "dispatch", MAX_PARTITIONS)
    for unit in units:
        assert Unit.of_key(unit.key) == unit
    assert len({u.key for u in units}) == len(units)


@pytest.mark.parametrize(
    "key",
    [
        "engines.0123456789abcdef",  # presence
        "partitions.acme",  # a partition count
        "dispatch",
        "dispatch.",
        "dispatch.acme.",
        "dispatch.acme.x",
        "dispatch.acme.-1",
        "dispatch.acme.01",  # not canonical: no unit's key
        "dispatch.acme.64",  # beyond the most partitions
        "dispatch.acme.1.2",
        "project.acme.0",  # a projector has no partitions
        "dispatch.Acme",  # no tenant's name
        "other.acme",
    ],
)
def test_keys_that_are_no_units_name_none(key: str) -> None:
    assert Unit.of_key(key) is None


def test_a_unit_is_a_dispatch_partition_that_exists_or_nothing() -> None:
    with pytest.raises(ValueError):
        Unit("acme", "project", 0)
    with pytest.raises(ValueError):
        Unit("acme", "dispatch", MAX_PARTITIONS)
    with pytest.raises(ValueError):
        Unit.units("acme", "project", 2)
    with pytest.raises(ValueError):
        Unit.units("acme", "dispatch", MAX_PARTITIONS + 1)


def test_units_sort_whole_before_partitions_and_by_partition() -> None:
    units = [Unit("a", "dispatch", 10), Unit("a", "dispatch", 2), Unit("a", "dispatch")]
    assert sorted(units) == [Unit("a", "dispatch"), Unit("a", "dispatch", 2), units[0]]


def leases(components: tuple[str, ...]) -> Leases:
    async def gained(_unit: Unit) -> None: ...

    def fenced(_unit: Unit) -> None: ...

    return Leases(
        None,  # type: ignore[arg-type]  # never connected: only what it wants is read
        components,
        gained=gained,
        fenced=fenced,
        released=gained,
    )


def test_a_partitioned_tenant_is_wanted_as_one_unit_per_partition_and_one_projector() -> None:
    both = leases(("dispatch", "project"))
    both.want("acme", partitions=3)
    both.want("solo")
    assert both.wanted == {
        Unit("acme", "dispatch", 0),
        Unit("acme", "dispatch", 1),
        Unit("acme", "dispatch", 2),
        Unit("acme", "project"),
        Unit("solo", "dispatch"),
        Unit("solo", "project"),
    }
    projecting = leases(("project",))
    projecting.want("acme", partitions=3)
    assert projecting.wanted == {Unit("acme", "project")}
