"""The orchestrator: events to runs, DAG progression, queueing ready steps."""

from dispatcher.decide import Event, Output, complete, decide, due, event_run_id
from dispatcher.folding import fold
from dispatcher.service import Dispatcher
from dispatcher.state import RunState, State, StepState
from dispatcher.step import fit, fold_all, step

__all__ = [
    "Dispatcher",
    "Event",
    "Output",
    "RunState",
    "State",
    "StepState",
    "complete",
    "decide",
    "due",
    "event_run_id",
    "fit",
    "fold",
    "fold_all",
    "step",
]
