"""NATS subject patterns matched in the client: ``*`` is one token, ``>`` one or more at the
end. Readers that want several subjects of a stream read it unfiltered and keep what matches
here, because a consumer with several filters costs the server a walk of every block's
subject tree per fetch (issue 9: ~90% of nats-server's CPU at 6,000 runs of history)."""

from __future__ import annotations

from collections.abc import Iterable


def matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` (no wildcards) is matched by ``pattern``."""
    return _matches(pattern.split("."), subject.split("."))


def _matches(want: list[str], have: list[str]) -> bool:
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(have) == len(want)


class Patterns:
    """A set of subject patterns: ``subject in patterns``. Empty: matches every subject."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._split = [p.split(".") for p in self.patterns]

    def __contains__(self, subject: object) -> bool:
        if not isinstance(subject, str):
            return False
        if not self._split:
            return True
        have = subject.split(".")
        return any(_matches(want, have) for want in self._split)

    def __repr__(self) -> str:
        return f"Patterns({list(self.patterns)!r})"
