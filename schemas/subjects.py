"""Subject builders and parsers: every subject starts with ``<tenant>.<namespace>.``.

| subject                                   | what                                   |
|-------------------------------------------|----------------------------------------|
| ``<t>.<ns>.events.<key...>``              | a user event (raw JSON body)           |
| ``<t>.<ns>.workflows.<workflow>``         | a workflow definition from a worker    |
| ``<t>.<ns>.tasks.<workflow>.<step>``      | a ready step offered to the queue group|
| ``<t>.<ns>.tasks.~direct.<worker>.<wf>.<step>`` | a step placed on one worker        |
| ``<t>.<ns>.runs.<run_id>.<kind>``         | one run's own history                  |
| ``<t>.<ns>.workers.<worker_id>``          | a worker's heartbeat (message TTL)     |
| ``<t>.<ns>.workers.<worker_id>.refused``  | the engine refuses a worker (not kept) |
| ``<t>.<ns>.crons.<name>.<kind>``          | a cron's history (created, armed, ...) |
| ``<t>.<ns>.schedules.<id>.<kind>``        | a scheduled run's history              |
| ``<t>.<ns>.ratelimits.<key>``             | a static rate limit set (latest wins)  |
| ``<t>.<ns>.timers.<cron|schedule>.<name>``| a pending timer (``schedules-<t>``)    |
| ``<t>.<ns>.fires.<cron|schedule>.<name>`` | a timer come due (``schedules-<t>``)   |
"""

from __future__ import annotations

import re

import attrs

from schemas.errors import NatchetError

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The token after ``tasks`` of a task placed on one worker (issue 15): no workflow name can
# be it (``~`` is in no name), so a worker's directed consumer never overlaps a queue group.
DIRECT = "~direct"
TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# An event key is one or more subject tokens; ':' is allowed (``user:create``).
EVENT_KEY_RE = re.compile(r"^[A-Za-z0-9_:\-]+(\.[A-Za-z0-9_:\-]+)*$")
# What a workflow listens to (``on_events``): a key, or a pattern in which ``*`` stands for
# one or more characters of any kind ('.' and ':' included): ``order:*``, ``*:created``, ``*``.
EVENT_PATTERN_RE = re.compile(r"^[A-Za-z0-9_:\-*]+(\.[A-Za-z0-9_:\-*]+)*$")


# An event published again (``natchet events replay``) names the sequence of the one it
# repeats in this header: the projector records the link (``events.replay_of``).
REPLAY_OF_HEADER = "Natchet-Replay-Of"


_SEQ_RE = re.compile(r"^[1-9][0-9]{0,18}$")
MAX_SEQ = 2**63 - 1  # a stream sequence is a uint64; Postgres keeps it in a bigint


def sequence(text: str) -> int | None:
    """A stream sequence written as text (an event id, a header, ``--as-of``), or None:
    ASCII digits only (``str.isdigit`` also takes "²", which ``int`` refuses), 1 to
    :data:`MAX_SEQ`."""
    if not _SEQ_RE.match(text):
        return None
    value = int(text)
    return value if value <= MAX_SEQ else None


class SubjectError(NatchetError, ValueError):
    """A name that cannot be used in a subject, or a subject that is not ours."""


def check_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise SubjectError(
            f"invalid tenant {tenant!r}: use 1-32 of a-z, 0-9, '_' or '-', starting with a "
            "letter or digit"
        )
    return tenant


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.match(name):
        raise SubjectError(f"invalid {kind} {name!r}: use 1-64 of A-Z, a-z, 0-9, '_' or '-'")
    return name


def check_event_key(key: str) -> str:
    if not EVENT_KEY_RE.match(key):
        raise SubjectError(
            f"invalid event key {key!r}: use letters, digits, '_', '-', ':' and '.' between "
            "non-empty parts"
        )
    return key


def check_event_pattern(pattern: str) -> str:
    """An event key, or a pattern of keys with ``*`` wildcards (see ``EVENT_PATTERN_RE``)."""
    if not EVENT_PATTERN_RE.match(pattern):
        raise SubjectError(
            f"invalid event key {pattern!r}: use letters, digits, '_', '-', ':' and '.' between "
            "non-empty parts, and '*' for any one or more characters"
        )
    return pattern


@attrs.frozen
class Scope:
    """A tenant and namespace: the prefix of every subject natchet uses."""

    tenant: str = attrs.field(validator=lambda _i, _a, v: check_tenant(v))
    namespace: str = attrs.field(
        default="default", validator=lambda _i, _a, v: check_name("namespace", v)
    )

    @property
    def prefix(self) -> str:
        return f"{self.tenant}.{self.namespace}"

    def event(self, key: str) -> str:
        return f"{self.prefix}.events.{check_event_key(key)}"

    def workflow(self, workflow: str) -> str:
        return f"{self.prefix}.workflows.{check_name('workflow', workflow)}"

    def task(self, workflow: str, step: str) -> str:
        return f"{self.prefix}.tasks.{workflow}.{step}"

    def tasks_filter(self, workflow: str) -> str:
        return f"{self.prefix}.tasks.{check_name('workflow', workflow)}.>"

    def directed_task(self, worker_id: str, workflow: str, step: str) -> str:
        """A task placed on one worker: only that worker's consumer reads it."""
        return (
            f"{self.prefix}.tasks.{DIRECT}.{check_name('worker id', worker_id)}.{workflow}.{step}"
        )

    def directed_filter(self, worker_id: str) -> str:
        """What one worker's directed consumer reads."""
        return f"{self.prefix}.tasks.{DIRECT}.{check_name('worker id', worker_id)}.>"

    def run(self, run_id: str, kind: str) -> str:
        return f"{self.prefix}.runs.{run_id}.{kind}"

    def run_filter(self, run_id: str) -> str:
        return f"{self.prefix}.runs.{run_id}.>"

    def worker(self, worker_id: str) -> str:
        """Liveness of one worker: heartbeats carry a message TTL, so they age out."""
        return f"{self.prefix}.workers.{worker_id}"

    def worker_refused(self, worker_id: str) -> str:
        """Where the engine tells a worker it refuses it (core NATS: not in any stream)."""
        return f"{self.prefix}.workers.{worker_id}.refused"

    def cron(self, name: str, kind: str) -> str:
        """One record of a cron's history, in the log."""
        return f"{self.prefix}.crons.{check_name('cron name', name)}.{kind}"

    def schedule(self, schedule_id: str, kind: str) -> str:
        """One record of a scheduled run's history, in the log."""
        return f"{self.prefix}.schedules.{check_name('schedule id', schedule_id)}.{kind}"

    def ratelimit(self, key: str) -> str:
        """A static rate limit's definition, in the log (the latest record wins)."""
        return f"{self.prefix}.ratelimits.{check_name('rate limit key', key)}"

    def timer(self, kind: str, name: str) -> str:
        """A cron's or schedule's pending timer: a message schedule in ``schedules-<t>``."""
        return f"{self.prefix}.timers.{kind}.{name}"

    def fire(self, kind: str, name: str) -> str:
        """Where the server stores a timer's fire (``timer``'s ``Nats-Schedule-Target``)."""
        return f"{self.prefix}.fires.{kind}.{name}"


def stream_name(tenant: str) -> str:
    """The tenant's log: events, registrations, runs and tasks (:func:`log_subjects`)."""
    return f"natchet-{check_tenant(tenant)}"


def tasks_stream_name(tenant: str) -> str:
    """The tenant's task queues: a work queue the log's tasks are sourced into, so the
    queue groups (and nothing of the engine's) are the only consumers workers can reach."""
    return f"tasks-{check_tenant(tenant)}"


def live_stream_name(tenant: str) -> str:
    """Worker liveness: heartbeats with a message TTL, kept apart from the append-only log."""
    return f"live-{check_tenant(tenant)}"


def schedules_stream_name(tenant: str) -> str:
    """The tenant's timers: message schedules (which force rollups on and purges allowed,
    so never in the log) and the fires the server stores for them. Engine only."""
    return f"schedules-{check_tenant(tenant)}"


def log_subjects(tenant: str) -> list[str]:
    """What the log captures: every area but worker liveness and timers."""
    t = check_tenant(tenant)
    return [
        f"{t}.*.events.>",
        f"{t}.*.workflows.*",
        f"{t}.*.runs.*.*",
        f"{t}.*.tasks.>",
        f"{t}.*.crons.*.*",
        f"{t}.*.schedules.*.*",
        f"{t}.*.ratelimits.*",
    ]


def schedules_subjects(tenant: str) -> list[str]:
    t = check_tenant(tenant)
    return [f"{t}.*.timers.*.*", f"{t}.*.fires.*.*"]


def tasks_subjects(tenant: str) -> str:
    return f"{check_tenant(tenant)}.*.tasks.>"


def live_subjects(tenant: str) -> str:
    return f"{check_tenant(tenant)}.*.workers.*"


@attrs.frozen
class ParsedSubject:
    scope: Scope
    area: str  # events | workflows | tasks | runs | workers | crons | schedules
    rest: tuple[str, ...]

    @property
    def event_key(self) -> str:
        return ".".join(self.rest)

    @property
    def run_id(self) -> str:
        return self.rest[0]

    @property
    def run_kind(self) -> str:
        return self.rest[1]

    @property
    def name(self) -> str:
        """A cron's name or a schedule's id (``crons.<name>.<kind>``)."""
        return self.rest[0]

    @property
    def kind(self) -> str:
        return self.rest[1]


AREAS = frozenset(
    {"events", "workflows", "tasks", "runs", "workers", "crons", "schedules", "ratelimits"}
)
# Areas whose subjects are ``<area>.<id>.<kind>``.
_ID_KIND_AREAS = frozenset({"runs", "crons", "schedules"})
# Scopes already checked, by (tenant, namespace): a reader parses every subject of a log
# whose few scopes repeat, and checking one is two regexes and a frozen class.
_SCOPES: dict[tuple[str, str], Scope] = {}
_SCOPES_MAX = 4096


def _scope(tenant: str, namespace: str) -> Scope:
    key = (tenant, namespace)
    scope = _SCOPES.get(key)
    if scope is None:
        scope = Scope(tenant, namespace)
        if len(_SCOPES) >= _SCOPES_MAX:
            _SCOPES.clear()
        _SCOPES[key] = scope
    return scope


def known_scope(tenant: str, namespace: str) -> Scope | None:
    """The scope of ``tenant`` and ``namespace`` if a subject of it was parsed already (so
    it was checked), else ``None``: a fast path's way to skip the check, not to make one."""
    return _SCOPES.get((tenant, namespace))


def parse(subject: str) -> ParsedSubject:
    parts = subject.split(".")
    if len(parts) < 4 or parts[2] not in AREAS:
        raise SubjectError(f"not a natchet subject: {subject!r}")
    try:
        scope = _scope(parts[0], parts[1])
    except SubjectError as exc:
        raise SubjectError(f"not a natchet subject: {subject!r}: {exc}") from None
    rest = tuple(parts[3:])
    if parts[2] in _ID_KIND_AREAS and len(rest) != 2:
        raise SubjectError(f"{parts[2]} subject needs <id>.<kind>: {subject!r}")
    if parts[2] == "ratelimits" and len(rest) != 1:
        raise SubjectError(f"ratelimits subject needs <key>: {subject!r}")
    return ParsedSubject(scope, parts[2], rest)
