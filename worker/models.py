"""Pydantic at the edges of a v1 task: its input validated into the workflow's
``input_validator``, its output dumped to JSON, a parent's output read back as its model."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class EmptyModel(BaseModel):
    """Hatchet's default input model: accepts any object, its keys kept as extra fields."""

    model_config = ConfigDict(extra="allow")


def parse_input(model: type[BaseModel], raw: Any) -> BaseModel:
    """``raw`` (a run's JSON input; ``None`` is ``{}``) as ``model``, or ``ValueError`` with
    one line naming each wrong field."""
    if isinstance(raw, model):
        return raw
    if isinstance(raw, BaseModel):
        raw = raw.model_dump(mode="json")
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        raise ValueError(f"input does not match {model.__name__}: {reasons(exc)}") from None


def reasons(exc: ValidationError) -> str:
    """A validation error on one line: ``field: why; other.field: why``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "input"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def dump_input(model: type[BaseModel], raw: Any) -> Any:
    """What ``wf.run(raw)`` sends: the input, validated, as JSON."""
    return parse_input(model, raw).model_dump(mode="json")


def to_json(output: Any) -> Any:
    """A step's output as JSON goes on the wire: a Pydantic model dumped, the rest as is."""
    if isinstance(output, BaseModel):
        return output.model_dump(mode="json")
    return output


def output_model(fn: Callable[..., Any]) -> type[BaseModel] | None:
    """The Pydantic model ``fn`` is annotated to return, if it is one."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: no model, no error
        return None
    ret = hints.get("return")
    return ret if inspect.isclass(ret) and issubclass(ret, BaseModel) else None


def parse_output(model: type[BaseModel] | None, output: Any) -> Any:
    """A task's JSON output read back as its model (when it returns one)."""
    return output if model is None or output is None else model.model_validate(output)
