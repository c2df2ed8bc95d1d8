"""A child run's id: deterministic from its parent, the parent's step and the spawn's key.

A step that spawns a child appends ``runs.<child id>.requested`` (dedup id
``<child id>:requested``). The id is a UUID 5 of the tenant, namespace, parent run, parent
step and key, and not of the parent's attempt: a retried step that spawns again with the
same keys names the same children, so it re-attaches to the runs its first attempt started
instead of starting them twice. The key defaults to the spawn's index within the attempt
(``"0"``, ``"1"``, ...). Any language's worker reproduces it (docs/protocol.md).
"""

from __future__ import annotations

import uuid

from schemas.subjects import Scope

CHILD_RUN_NAMESPACE = uuid.UUID("3d1f4f0e-6c2a-5b8e-9a47-0c5e2b7d9f13")


def child_run_id(scope: Scope, parent_run_id: str, step: str, key: str) -> str:
    """``uuid5(CHILD_RUN_NAMESPACE, "<tenant>.<namespace>/<parent>/<step>/<key>")``."""
    name = f"{scope.prefix}/{parent_run_id}/{step}/{key}"
    return str(uuid.uuid5(CHILD_RUN_NAMESPACE, name))
