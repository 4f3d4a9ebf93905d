"""The Redis key schema: every key and channel name celery_deflow uses. Imports nothing of ours.

All keys live under one prefix (``DeFlow.register(key_prefix=...)``). A workflow's keys share the hash tag
``{<workflow id>}``; the Lua scripts derive a workflow's per-step keys from its base key (see
``lua/_lib.lua``), so the names built here and there must agree::

    <p>:wf:{<id>}                   hash   workflow record
    <p>:wf:{<id>}:plan              list   phase tokens still to run
    <p>:wf:{<id>}:order             list   step sids in execution order
    <p>:wf:{<id>}:ins:<token>       zset   steps added during a phase
    <p>:wf:{<id>}:dedup             hash   replay markers
    <p>:wf:{<id>}:s:<sid>           hash   step record
    <p>:wf:{<id>}:s:<sid>:data      list   task data (JSON), in insertion order
    <p>:wf:{<id>}:s:<sid>:st        hash   task state by position
    <p>:wf:{<id>}:s:<sid>:res       hash   results (JSON) by position
    <p>:wf:{<id>}:s:<sid>:fail      hash   failed attempts by position
    <p>:wf:{<id>}:s:<sid>:err       hash   last error by position
    <p>:wf:{<id>}:s:<sid>:herr      list   hook errors
    <p>:wf:{<id>}:s:<sid>:slots     zset   task_concurrency slots held per worker node
    <p>:leases                      zset   lease id -> expiry (ms), all workflows
    <p>:lease:<lease id>            string what the lease holds (JSON), with a TTL
    <p>:running                     zset   running workflow ids -> start time (ms)
    <p>:names:<name>                set    ids of the workflows with that name
    <p>:ev:<id>                     pub/sub channel of a workflow's events
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeySchema"]


@dataclass(frozen=True, slots=True)
class KeySchema:
    """Builds every key under ``prefix``."""

    prefix: str = "deflow"

    def workflow(self, workflow_id: str) -> str:
        """The workflow record, and the base of all its other keys."""
        return f"{self.prefix}:wf:{{{workflow_id}}}"

    def plan(self, workflow_id: str) -> str:
        """The list of phase tokens still to run."""
        return f"{self.workflow(workflow_id)}:plan"

    def order(self, workflow_id: str) -> str:
        """The list of step sids in the order their tasks phases started."""
        return f"{self.workflow(workflow_id)}:order"

    def owed(self, workflow_id: str) -> str:
        """The zset of dispatches recorded but not yet confirmed published."""
        return f"{self.workflow(workflow_id)}:owed"

    def step(self, workflow_id: str, sid: int) -> str:
        """A step record."""
        return f"{self.workflow(workflow_id)}:s:{sid}"

    def step_part(self, workflow_id: str, sid: int, part: str) -> str:
        """One of a step's task structures: ``data``, ``st``, ``res``, ``fail``, ``err``, ``herr``, ``slots``."""
        return f"{self.workflow(workflow_id)}:s:{sid}:{part}"

    def leases(self) -> str:
        """The zset of all leases and their expiry."""
        return f"{self.prefix}:leases"

    def lease(self, lease_id: str) -> str:
        """The record of what a lease holds."""
        return f"{self.prefix}:lease:{lease_id}"

    def running(self) -> str:
        """The zset of running workflows."""
        return f"{self.prefix}:running"

    def names(self, name: str) -> str:
        """The set of the ids of the workflows called ``name``."""
        return f"{self.prefix}:names:{name}"

    def channel(self, workflow_id: str) -> str:
        """The pub/sub channel of a workflow's events."""
        return f"{self.prefix}:ev:{workflow_id}"

    def channel_pattern(self) -> str:
        """The pattern matching every workflow's channel."""
        return f"{self.prefix}:ev:*"

    def workflow_id_of_channel(self, channel: str) -> str:
        """The workflow id that :meth:`channel` made ``channel`` from."""
        return channel[len(self.prefix) + 4 :]
