"""The orchestrator: events to runs, DAG progression, queueing ready steps."""

from dispatcher.decide import Event, Output, Tick, decide, due, event_run_id
from dispatcher.service import Dispatcher
from dispatcher.state import RunState, State, StepState, fold

__all__ = [
    "Dispatcher",
    "Event",
    "Output",
    "RunState",
    "State",
    "StepState",
    "Tick",
    "decide",
    "due",
    "event_run_id",
    "fold",
]
