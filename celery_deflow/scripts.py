"""Loading and running the Lua transitions (``lua/*.lua``, shipped as package data).

Every script gets the shared prelude ``lua/_lib.lua`` prepended and is registered with redis-py's
``register_script`` (EVALSHA, reloaded on ``NOSCRIPT``). Pipelined calls use EVALSHA directly and, should the
server have lost its script cache, are retried once after loading the scripts again -- the transitions are
idempotent, so a replay returns the first outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

__all__ = ["SCRIPT_NAMES", "LuaScript", "ScriptSet", "load_source"]

#: One script per state transition.
SCRIPT_NAMES = (
    "add_after",
    "add_tasks",
    "cancel_workflow",
    "claim_hook",
    "claim_tasks",
    "close_phase",
    "delete_workflow",
    "finish_hook",
    "finish_tasks",
    "reclaim_lease",
    "start_workflow",
)

Arg = str | int | float
T = TypeVar("T")


def load_source(name: str) -> str:
    """The source of script ``name`` with the shared prelude prepended."""
    folder = resources.files("celery_deflow") / "lua"
    prelude = (folder / "_lib.lua").read_text(encoding="utf-8")
    return prelude + "\n" + (folder / f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class LuaScript:
    """One registered transition."""

    name: str
    script: Script

    def __call__(self, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run the script now (EVALSHA, loading it if the server does not know it)."""
        return self.script(keys=list(keys), args=list(args))

    def queue(self, pipe: redis.client.Pipeline, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Queue the script on a pipeline (plain EVALSHA; see :meth:`ScriptSet.execute`)."""
        pipe.evalsha(self.script.sha, len(keys), *keys, *args)


class ScriptSet:
    """All transitions, registered on one client."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.add_after = self._register("add_after")
        self.add_tasks = self._register("add_tasks")
        self.cancel_workflow = self._register("cancel_workflow")
        self.claim_hook = self._register("claim_hook")
        self.claim_tasks = self._register("claim_tasks")
        self.close_phase = self._register("close_phase")
        self.delete_workflow = self._register("delete_workflow")
        self.finish_hook = self._register("finish_hook")
        self.finish_tasks = self._register("finish_tasks")
        self.reclaim_lease = self._register("reclaim_lease")
        self.start_workflow = self._register("start_workflow")

    def _register(self, name: str) -> LuaScript:
        return LuaScript(name, self._client.register_script(load_source(name)))

    def all(self) -> list[LuaScript]:
        """Every registered script."""
        return [getattr(self, name) for name in SCRIPT_NAMES]

    def execute(self, build: Callable[[redis.client.Pipeline], T]) -> tuple[T, list[Any]]:
        """Build a pipeline with ``build`` and execute it; on ``NOSCRIPT`` load every script and run it again.

        Returns what ``build`` returned and the pipeline's replies.
        """
        try:
            pipe = self._client.pipeline(transaction=False)
            built = build(pipe)
            return built, pipe.execute()
        except NoScriptError:
            for script in self.all():
                self._client.script_load(script.script.script)
            pipe = self._client.pipeline(transaction=False)
            built = build(pipe)
            return built, pipe.execute()
