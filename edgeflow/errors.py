"""One exception family for everything edgeflow reports to a user."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["EdgeflowError", "FlowValidationError", "redact"]

_SECRET_KEY = re.compile(r"pass(word|wd|phrase)?|secret|token|api_?key|credential|private_?key", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<user>[\w.%-]+):(?P<pw>[^\s/'\"]+)@(?=[\w.\[\]-])")
_KEY_VALUE = re.compile(
    r"(?P<key>['\"]?(?:pass(?:word|wd|phrase)?|secret|token|api_?key)['\"]?\s*[:=]\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s,}]+)",
    re.IGNORECASE,
)
REDACTED = "***"


def redact(value: Any) -> Any:
    """Return *value* with secrets hidden: values under secret-named keys, and ``user:password@`` in text.

    >>> redact({"host": "edge", "password": "S3cr3t-P@ss", "tls": {"keyfile_password": "x"}})
    {'host': 'edge', 'password': '***', 'tls': {'keyfile_password': '***'}}
    >>> redact("no MQTT broker reachable at edge:S3cr3t-P@ss@10.0.0.2:1883 (password='S3cr3t-P@ss')")
    "no MQTT broker reachable at edge:***@10.0.0.2:1883 (password='***')"
    """
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) and v else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        text = _URL_PASSWORD.sub(lambda m: f"{m['user']}:{REDACTED}@", value)
        return _KEY_VALUE.sub(
            lambda m: m["key"] + (m["value"][0] + REDACTED + m["value"][0] if m["value"][0] in "'\"" else REDACTED),
            text,
        )
    return value


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
        value = REDACTED if field is not None and _SECRET_KEY.search(field) and value else redact(value)
        problem, hint = redact(problem), redact(hint)
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
