"""One task as the controller holds it: the parsed task and its push state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from measure_model.task import Task


@dataclass
class TaskRecord:
    """A stored task, its overall status and each agent's answer to its push.

    ``status`` is ``pending`` until the root acknowledged it, then ``active``
    or ``partial`` (some agents refused); a bandwidth task goes ``pending``
    -> ``running`` -> ``done`` | ``failed``.
    """

    id: str
    task: Task
    created: float
    status: str = "pending"
    agents: dict[str, str] = field(default_factory=dict)
    last_error: str | None = None
    pushed_at: float = 0.0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TaskRecord:
        """A record from a ``Store.tasks`` row, with the stored status."""
        task = Task.from_dict(row["task"], f"stored task {row['id']}")
        return cls(row["id"], task, row["created"], row["status"])

    @property
    def pushed(self) -> bool:
        """Whether the task travels to agents (bandwidth tasks run from here)."""
        return self.task.kind != "bandwidth"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.task.name, "kind": self.task.kind,
                "created": self.created, "status": self.status, "agents": dict(self.agents),
                "last_error": self.last_error, "task": self.task.to_dict()}
