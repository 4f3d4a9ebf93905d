"""Pure values and rules: step options and their precedence, progress, phase tokens, batching, names.

No I/O and no clock: whatever these functions need arrives as arguments. Imports nothing of ours.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "HOOK_KINDS",
    "STEP_OPTION_NAMES",
    "PhaseKind",
    "Progress",
    "StepOptions",
    "batch_ranges",
    "format_token",
    "merge_options",
    "next_window",
    "parse_token",
    "slugify",
]

#: The step options, as in the contract's table.
STEP_OPTION_NAMES: Final = ("task_timeout", "task_concurrency", "task_max_fail_count", "task_fail_retry_delay")

PhaseKind = Literal["b", "t", "a"]
#: Phase kinds: ``b`` before_all, ``t`` the step's tasks, ``a`` after_all.
HOOK_KINDS: Final[dict[str, str]] = {"b": "before_all", "a": "after_all"}

_TOKEN = re.compile(r"^(\d+):([bta])$")
_SLUG_DROP = re.compile(r"[^A-Za-z0-9._:-]+")


@dataclass(frozen=True, slots=True)
class StepOptions:
    """The effective options of a step (seconds). See the contract's step options table."""

    task_timeout: float | None = None
    task_concurrency: int = 1
    task_max_fail_count: int = 1
    task_fail_retry_delay: float | None = None

    @property
    def attempts(self) -> int:
        """Total attempts per task (``task_max_fail_count``; 0 behaves like 1)."""
        return max(1, self.task_max_fail_count)

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (the public ``options`` attribute of steps)."""
        return {name: getattr(self, name) for name in STEP_OPTION_NAMES}


def _checked(name: str, value: Any) -> Any:
    if name in {"task_timeout", "task_fail_retry_delay"}:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{name} must be a non-negative number of seconds or None, not {value!r}")
        return None if name == "task_timeout" and value == 0 else float(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if name == "task_concurrency" and value < 1:
        raise ValueError(f"task_concurrency must be at least 1, not {value}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value}")
    return value


def merge_options(*layers: Mapping[str, Any] | None) -> StepOptions:
    """The effective options: later layers win (defaults < workflow < handler < add_step/add_after).

    Raises ``ValueError`` for an unknown option name or a value of the wrong type.
    """
    values: dict[str, Any] = {}
    for layer in layers:
        for name, value in (layer or {}).items():
            if name not in STEP_OPTION_NAMES:
                raise ValueError(f"unknown step option {name!r} (known: {', '.join(STEP_OPTION_NAMES)})")
            values[name] = _checked(name, value)
    return StepOptions(**values)


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a step (or a workflow) is: ``done`` finished tasks out of ``total``.

    ``percent`` reads ``"25.00% - 1/4"``, or ``"0% - 0/0"`` when there are no tasks.
    """

    done: int
    total: int
    percent: str

    @classmethod
    def of(cls, done: int, total: int) -> Progress:
        """The progress of ``done`` out of ``total`` tasks."""
        if total <= 0:
            return cls(done, total, f"0% - {done}/{total}")
        return cls(done, total, f"{done / total * 100:.2f}% - {done}/{total}")


def format_token(sid: int, kind: PhaseKind) -> str:
    """The token naming phase ``kind`` of step ``sid`` (``"3:t"``)."""
    return f"{sid}:{kind}"


def parse_token(token: str) -> tuple[int, PhaseKind]:
    """``(sid, kind)`` from a phase token; ``ValueError`` if it is not one."""
    match = _TOKEN.match(token)
    if match is None:
        raise ValueError(f"not a phase token: {token!r}")
    kind: PhaseKind = match.group(2)  # type: ignore[assignment]
    return int(match.group(1)), kind


def batch_ranges(lo: int, hi: int, *, max_batch_size: int, target_batches: int) -> Iterator[tuple[int, int]]:
    """Split task positions ``[lo, hi)`` into message ranges.

    About ``target_batches`` ranges, each of at most ``max_batch_size`` tasks, so that small phases spread
    one task per message across every worker and large ones carry many tasks per message.
    """
    count = hi - lo
    if count <= 0:
        return
    size = min(max_batch_size, max(1, math.ceil(count / target_batches)))
    for start in range(lo, hi, size):
        yield start, min(hi, start + size)


def next_window(previous: int, seconds_per_task: float | None, *, window: float, limit: int) -> int:
    """How many tasks to claim next: about ``window`` seconds of work, growing at most 4x per claim.

    Without a measurement yet, one task. Always between 1 and ``limit``.
    """
    if seconds_per_task is None:
        wanted = 1
    elif seconds_per_task <= 0:
        wanted = limit
    else:
        wanted = max(1, int(window / seconds_per_task))
    return max(1, min(limit, wanted, max(1, previous) * 4))


def slugify(name: str) -> str:
    """The id-safe form of a workflow name: whitespace becomes ``-``; only ``A-Za-z0-9._:-`` remain."""
    slug = _SLUG_DROP.sub("", re.sub(r"\s+", "-", name.strip()))
    return slug or "workflow"
