"""One exception family for everything edgeflow reports to a user."""

from __future__ import annotations

from typing import Any

__all__ = ["EdgeflowError", "FlowValidationError"]


class EdgeflowError(Exception):
    """Base class of every error edgeflow raises on purpose."""


class FlowValidationError(EdgeflowError):
    """A flow that cannot run, found before any data flows.

    The message names the step, the field and the offending value, and ends
    with a hint:

    >>> err = FlowValidationError("win", "size", 0, "must be > 0", hint="use e.g. 256")
    >>> str(err)
    "step 'win': field 'size' got 0: must be > 0. Hint: use e.g. 256"
    """

    def __init__(self, step_id: str, field: str | None, value: Any, problem: str, *, hint: str = "") -> None:
        self.step_id = step_id
        self.field = field
        self.value = value
        self.problem = problem
        self.hint = hint
        where = f"step {step_id!r}: field {field!r} got {value!r}" if field else f"step {step_id!r}"
        msg = f"{where}: {problem}"
        if hint:
            msg += f". Hint: {hint}"
        super().__init__(msg)
