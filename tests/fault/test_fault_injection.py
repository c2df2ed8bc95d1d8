"""Fault injection with real processes and real servers (bench/chaos_harness.py): a steady
load of runs while a worker is killed, nats-server, Postgres or the engine restarts, or a
worker gets SIGTERM. After each: nothing lost, nothing doubled, the log and Postgres agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos_harness import Config, Report, run_scenario
from eventstore import TaskConsumerSettings

pytestmark = pytest.mark.fault

RUNS = 80
CONFIG = Config(runs=RUNS, rate_per_s=25.0, strikes=2, deadline_s=120.0)
ACK_WAIT_S = TaskConsumerSettings().ack_wait_s


def assert_invariants(report: Report) -> None:
    """Every run submitted, terminal and SUCCEEDED, once; no transition twice in the log;
    attempts in Postgres equal the log's deliveries; SIGTERMed processes exited 0."""
    shown = "\n".join(report.violations[:30])
    assert report.submitted == RUNS
    assert report.lost == 0, f"{report.lost} runs not terminal:\n{shown}"
    assert report.completed == RUNS
    assert report.duplicated == 0, shown
    assert report.ok, shown


async def test_worker_kill_9_mid_step_redelivers_within_10s(tmp_path: Path) -> None:
    report = await run_scenario("worker_kill_9", CONFIG, tmp_path)
    assert_invariants(report)
    assert len(report.faults) == CONFIG.strikes
    assert report.redelivery_delays, "the killed workers held no task"
    assert report.max_redelivery_s is not None and report.max_redelivery_s < 10.0


async def test_nats_restart_mid_load_loses_nothing(tmp_path: Path) -> None:
    report = await run_scenario("nats_restart", CONFIG, tmp_path)
    assert_invariants(report)
    assert report.faults == [f"nats-server down {CONFIG.outage_s:g}s"]


async def test_postgres_restart_mid_load_loses_nothing(tmp_path: Path) -> None:
    report = await run_scenario("postgres_restart", CONFIG, tmp_path)
    assert_invariants(report)
    assert report.faults == [f"postgres down {CONFIG.outage_s:g}s"]


async def test_engine_kill_9_mid_load_loses_nothing(tmp_path: Path) -> None:
    report = await run_scenario("engine_kill_9", CONFIG, tmp_path)
    assert_invariants(report)
    assert [code for name, code in report.exit_codes.items() if name.startswith("engine")] == [
        -9,
        0,
    ]


async def test_sigterm_worker_mid_step_hands_back_and_exits_0(tmp_path: Path) -> None:
    report = await run_scenario("sigterm_worker", CONFIG, tmp_path)
    assert_invariants(report)
    workers = {n: c for n, c in report.exit_codes.items() if n.startswith("chaos-")}
    assert workers and all(code == 0 for code in workers.values()), workers
    assert report.handed_back >= 1, "no step was handed back: SIGTERM came between steps"
    # Handed back at once (nak), not left to the consumer's ack_wait.
    assert report.max_redelivery_s is not None and report.max_redelivery_s < ACK_WAIT_S
