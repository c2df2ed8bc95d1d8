"""Realistic messages of every kind, as the engine, workers and clients write them: the
``examples`` of the JSON Schemas (:mod:`schemas.jsonschema`), encoded with
:func:`schemas.codec.encode`. One run of a two-step workflow ``Welcome`` (``fetch``, then
``email``, which fails once and is retried) in tenant ``acme``. Pure: no IO."""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from schemas import durable as d
from schemas import holds as h
from schemas import labels as lb
from schemas import messages as m
from schemas import ratelimits as rl
from schemas import tenancy as sys_
from schemas.codec import encode
from schemas.definition import workflow_version
from schemas.protocol import refusal

RUN = "9b2f6c0e-4c1e-4f0a-9a57-2f1d3c5b7e21"
REPLAY = "0c7e1d52-8a40-4b8e-b3a1-6f2c9d4e5a10"
WORKER = "w-5d1c8a3e"
INPUT = {"user_id": 42, "email": "ada@example.com"}
FETCHED = {"name": "Ada", "plan": "pro"}
FIRE = "2026-01-06T02:00:00+00:00"  # a cron's tick, a scheduled run's time
CRON_RUN = "5e0b8f3a-2d71-5c49-8e6f-1a7b9c3d2e40"
SCHEDULE_RUN = "a41d7c9e-0b36-5f2a-9c8d-3e5f7a1b6c02"


def at(second: int, micro: int = 0) -> str:
    """A fixed time, so the examples (and the files written from them) never change."""
    return f"2026-01-05T09:30:{second:02d}.{micro:06d}+00:00"


FETCH = m.StepDef("fetch", timeout_s=30.0)
EMAIL = m.StepDef("email", parents=("fetch",), retries=2, backoff_factor=2.0, backoff_max_s=60.0)
CLEANUP = m.StepDef("cleanup")


def _workflow() -> m.WorkflowDef:
    wf = m.WorkflowDef(
        "Welcome",
        "",
        (FETCH, EMAIL),
        on_events=("user:created",),
        on_failure=CLEANUP,
        registered_at=at(0),
    )
    return attrs.evolve(wf, version=workflow_version(orjson.loads(encode(wf))))


WORKFLOW = _workflow()


def _placed() -> m.WorkflowDef:
    """Issue 15: a step that needs a GPU and prefers memory, its runs sticky."""
    infer = m.StepDef(
        "infer",
        desired_worker_labels={
            "gpu": lb.DesiredWorkerLabel("a100", required=True),
            "memory": lb.DesiredWorkerLabel(
                64, weight=50, comparator=lb.WorkerLabelComparator.GREATER_THAN_OR_EQUAL
            ),
        },
    )
    wf = m.WorkflowDef(
        "Inference",
        "",
        (FETCH, attrs.evolve(infer, parents=("fetch",))),
        sticky=lb.StickyStrategy.SOFT,
        registered_at=at(0),
    )
    return attrs.evolve(wf, version=workflow_version(orjson.loads(encode(wf))))


_CANCELLED = m.StepFinished(
    RUN, "email", 1, 1, m.RunStatus.CANCELLED, error="the run was cancelled", at=at(12)
)
_FETCHED = m.StepFinished(RUN, "fetch", 1, 1, m.RunStatus.SUCCEEDED, output=FETCHED, at=at(2))
# A durable step's two wakes: its first wait slept (condition 0), its second heard the event.
_SAME_USER = "input.user_id == 42"
_SLEPT = d.StepWoken(RUN, "email", 1, 0, 0, d.WaitKind.SLEEP, at=at(4))
_CONFIRMED = d.StepWoken(
    RUN,
    "email",
    1,
    1,
    0,
    d.WaitKind.EVENT,
    event_key="user:confirmed",
    event_id="118",
    payload={"user_id": 42},
    at=at(39),
)
_EMAILED = m.StepFinished(
    RUN, "email", 2, 1, m.RunStatus.SUCCEEDED, output={"sent": True}, at=at(15)
)

EXAMPLES: dict[str, tuple[Any, ...]] = {
    "workflow": (WORKFLOW, _placed()),
    "requested": (
        m.RunRequested(RUN, "Welcome", INPUT, requested_at=at(1)),
        attrs.evolve(m.RunRequested.of_replay(REPLAY, RUN, "email"), requested_at=at(19)),
    ),
    "created": (
        m.RunCreated(
            RUN,
            "Welcome",
            WORKFLOW.version,
            INPUT,
            WORKFLOW.steps,
            created_at=at(1, 2000),
            on_failure=CLEANUP,
        ),
        m.RunCreated(
            REPLAY,
            "Welcome",
            WORKFLOW.version,
            INPUT,
            WORKFLOW.steps,
            trigger=m.Trigger.of_replay(RUN, "email"),
            created_at=at(20),
            on_failure=CLEANUP,
            kept={"fetch": FETCHED},
        ),
        m.RunCreated(
            RUN,
            "Welcome",
            WORKFLOW.version,
            {"user_id": 7},
            WORKFLOW.steps,
            trigger=m.Trigger.of_event("user:created", "1187"),
            created_at=at(1, 2000),
        ),
    ),
    "rejected": (
        m.RunRejected(RUN, "Welcom", "no workflow named 'Welcom' is registered", at=at(1)),
    ),
    "queued": (m.StepQueued(RUN, "fetch", 1, queued_at=at(1, 3000)),),
    "task": (
        m.Task(
            RUN,
            "Welcome",
            "email",
            2,
            INPUT,
            {"fetch": FETCHED},
            60.0,
            queued_at=at(2, 1000),
            workflow_version=WORKFLOW.version,
            schedule_deadline="2026-01-05T09:35:02.001000+00:00",
        ),
        m.Task(  # offered once rate limit 'smtp' had room: what it took of it
            RUN,
            "Welcome",
            "email",
            1,
            INPUT,
            {"fetch": FETCHED},
            60.0,
            queued_at=at(2, 100),
            workflow_version=WORKFLOW.version,
            schedule_deadline="2026-01-05T09:35:02.000100+00:00",
            rate_limits=(rl.RateLimitUse("smtp", 1, at(3, 500000), 1.0),),
        ),
        m.Task(
            RUN,
            "Welcome",
            "cleanup",
            1,
            INPUT,
            {"fetch": FETCHED},
            60.0,
            queued_at=at(16),
            workflow_version=WORKFLOW.version,
            step_errors={"email": "SMTP 550: mailbox unavailable"},
        ),
        m.Task(
            RUN,
            "Welcome",
            "email",
            1,
            INPUT,
            {"fetch": FETCHED},
            60.0,
            queued_at=at(40),
            workflow_version=WORKFLOW.version,
            wakes=(_SLEPT, _CONFIRMED),
            delivery_offset=2,
        ),
    ),
    "assigned": (m.StepAssigned(RUN, "email", 1, 1, WORKER, "mailer", started_at=at(3)),),
    "log": (m.StepLog(RUN, "email", 1, 1, "connecting to smtp.example.com", at=at(4)),),
    "result": (
        m.StepResult(
            RUN,
            "fetch",
            1,
            1,
            WORKER,
            True,
            output=FETCHED,
            finished_at=at(2),
            worker_name="mailer",
            started_at=at(1, 5000),
        ),
        m.StepResult(
            RUN,
            "email",
            1,
            1,
            WORKER,
            False,
            error="SMTP 421: try again later",
            finished_at=at(8),
            worker_name="mailer",
            started_at=at(3),
            traceback='Traceback (most recent call last):\n  File "mailer.py", line 12, in email\n'
            "smtplib.SMTPResponseException: (421, 'try again later')\n",
        ),
    ),
    "waiting": (
        d.StepWaiting(
            RUN,
            "email",
            1,
            2,
            1,
            (
                d.WaitCondition(
                    d.WaitKind.EVENT, event_key="user:confirmed", expression=_SAME_USER
                ),
                d.WaitCondition(d.WaitKind.SLEEP, until="2026-01-06T09:30:05+00:00"),
            ),
            worker_id="3f1c2a9e8b7d4c6e",
            worker_name="mailer",
            at=at(5),
        ),
    ),
    "woken": (_SLEPT, _CONFIRMED),
    "held": (
        h.StepHeld(
            RUN,
            "email",
            1,
            h.HoldKind.RATE_LIMIT,
            "rate limit 'smtp' allows 10 units per 1s; next room at 2026-01-05T09:30:03.5+00:00",
            at=at(2, 100),
        ),
    ),
    "retry_scheduled": (
        m.StepRetryScheduled(
            RUN, "email", 1, 2, at(10), error="SMTP 421: try again later", at=at(9)
        ),
    ),
    "cancel_requested": (
        m.RunCancelRequested(RUN, reason="the user unsubscribed", requested_at=at(12)),
    ),
    "step_finished": (_FETCHED,),
    "finished": (
        m.RunFinished(RUN, m.RunStatus.SUCCEEDED, at=at(15), steps=(_EMAILED,)),
        m.RunFinished(
            RUN,
            m.RunStatus.CANCELLED,
            error="the user unsubscribed",
            at=at(12),
            steps=(_CANCELLED,),
        ),
    ),
    "heartbeat": (
        m.WorkerHeartbeat(
            WORKER,
            "mailer",
            ("Welcome:fetch", "Welcome:email", "Welcome:cleanup"),
            4,
            1,
            m.WorkerStatus.ACTIVE,
            at(0),
            at=at(5),
            sdk_version="0.1.0",
            protocol=1,
            labels={"gpu": "a100", "memory": 64},
            directed=True,
        ),
    ),
    "tenant_created": (sys_.TenantCreated("acme", max_bytes=1 << 30, created_at=at(0)),),
    "tenant_limits_changed": (
        sys_.TenantLimitsChanged("acme", max_bytes=2 << 30, max_connections=200, at=at(30)),
    ),
    "tenant_log_full": (sys_.TenantLogFull("acme", 1 << 30, "maximum bytes exceeded", at=at(40)),),
    "token_created": (
        sys_.TokenCreated(
            "k3x9v2m7q1", "acme", sys_.hash_secret("example"), name="ci", created_at=at(0)
        ),
    ),
    "token_revoked": (sys_.TokenRevoked("k3x9v2m7q1", revoked_at=at(50)),),
    "operator_created": (
        sys_.OperatorCreated("op4f8a2c", sys_.hash_secret("example"), "ops", created_at=at(0)),
    ),
    "operator_revoked": (sys_.OperatorRevoked("op4f8a2c", revoked_at=at(50)),),
    "refused": (
        m.WorkerRefused(
            WORKER,
            refusal(2, "0.2.0"),
            2,
            (1,),
            engine_version="0.1.0",
            at=at(5),
        ),
    ),
    "cron_created": (
        m.CronCreated(
            "c-7f3a9e21",
            "nightly-welcome",
            "Welcome",
            "0 3 * * *",
            INPUT,
            timezone="Europe/Paris",
            created_at=at(20),
        ),
    ),
    "cron_deleted": (m.CronDeleted("nightly-welcome", at=at(59)),),
    "cron_armed": (m.CronArmed("nightly-welcome", "c-7f3a9e21", FIRE, at=at(20, 4000)),),
    "cron_fired": (m.CronFired("nightly-welcome", "c-7f3a9e21", FIRE, CRON_RUN, at=at(21)),),
    "cron_rejected": (
        m.CronRejected(
            "nightly-welcome", "c-7f3a9e21", "expression '0 3 * *': 4 fields", at=at(20, 2000)
        ),
    ),
    "schedule_created": (
        m.ScheduleCreated("s-1c9d4e7b", "Welcome", FIRE, INPUT, created_at=at(22)),
    ),
    "schedule_deleted": (m.ScheduleDeleted("s-1c9d4e7b", at=at(58)),),
    "schedule_fired": (m.ScheduleFired("s-1c9d4e7b", SCHEDULE_RUN, at=at(23)),),
    "schedule_rejected": (
        m.ScheduleRejected("s-1c9d4e7b", "trigger_at is not a time: 'tomorrow'", at=at(22, 10)),
    ),
    "timer": (m.TimerFired("cron", "nightly-welcome", "c-7f3a9e21", FIRE),),
    "ratelimit": (rl.RateLimitSet("smtp", 10, rl.RateLimitDuration.SECOND, at=at(1)),),
}
