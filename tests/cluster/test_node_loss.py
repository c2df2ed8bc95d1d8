"""A 3-node NATS cluster, every stream with 3 replicas; the engine and three workers given
every node's URL; a steady load of runs (10/s for 20 s) while the node leading the tenant's
log is killed with SIGKILL, left down 5 s and started again (bench/chaos_harness.py,
scenario ``nats_node_kill_9``). Nothing is lost or appended twice, runs start again, and
the restarted node catches up (holds a current copy, lag 0, of every stream of the tenant).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos_cluster import tenant_streams
from bench.chaos_harness import Config, run_scenario

pytestmark = [pytest.mark.fault, pytest.mark.cluster]

RUNS = 200
CONFIG = Config(runs=RUNS, rate_per_s=10.0, outage_s=5.0, deadline_s=120.0)
# What a leader's death costs on nats-server 2.15 (docs/scaling.md: 5.0-11.7 s in four runs
# of this code on this machine, up to 20 s before the sourcing nudge): the followers elect
# a new leader of the log after 4-9 s without its heartbeats, and a kill that also takes
# the dispatcher's consumer leaders and the meta leader slows the dispatcher's restart.
# The 10 s is the aim; the test asserts a correctness bound with slack for a
# loaded machine, and prints the figure.
RECOVERY_BOUND_S = 30.0


async def test_kill_9_the_log_leader_loses_nothing_and_it_catches_up(tmp_path: Path) -> None:
    report = await run_scenario("nats_node_kill_9", CONFIG, tmp_path)
    print(
        f"\nkilled {report.node_killed}: runs at the load's rate again after "
        f"{report.recovered_s}s (longest pause between run starts {report.max_start_gap_s}s); "
        f"caught up {report.catch_up_s}s after its restart"
    )
    shown = "\n".join(report.violations[:30])
    assert report.submitted == RUNS
    assert report.lost == 0, f"{report.lost} runs not terminal:\n{shown}"
    assert report.completed == RUNS
    assert report.duplicated == 0, shown
    assert report.ok, shown  # includes: no Nats-Msg-Id stored twice in the log
    assert report.replicas == {stream: 3 for stream in tenant_streams("chaos")}
    assert report.catch_up_s is not None  # it held a current copy of every stream again
    assert report.recovered_s is not None and report.recovered_s < RECOVERY_BOUND_S
    assert all(code == 0 for code in report.exit_codes.values()), report.exit_codes
