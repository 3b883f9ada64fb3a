"""Every error of a policy file, said the way people fix them.

Validation itself is ``load_policy`` / ``parse_tasks``, which stop at the
first problem, as a server should. For a person editing a file this module
collects them all (``measure check`` prints them; a refused ``POST tasks``
lists them under ``errors``):

- a YAML syntax error is shown with its line and a caret under the column,
  as YAML tools do;
- each task is checked on its own, so one bad task does not hide the next;
- inside a task, the field an error names is set aside and the task checked
  again, so ``threshhold`` and a bad ``key`` are both reported;
- an unknown field gets "did you mean" from the model's field table.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from measure_model.policy import read_policy
from measure_model.task import (
    FILTER_ROWS,
    SKETCH_ROWS,
    TASK_FIELDS,
    WINDOW_ROWS,
    PolicyError,
    Task,
    parse_task,
    parse_tasks,
)

NESTED = {"filter": [r.name for r in FILTER_ROWS], "window": [r.name for r in WINDOW_ROWS],
          "sketch": [r.name for r in SKETCH_ROWS]}
UNKNOWN = re.compile(r"unknown (?:top-level )?field '([^']+)'")
MAX_ROUNDS = 20  # errors reported per task at most


@dataclass
class CheckResult:
    tasks: list[Task] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def did_you_mean(name: str) -> str:
    """`` (did you mean 'threshold'?)`` for a misspelt field, else ''."""
    parent, _, leaf = name.rpartition(".")
    choices = NESTED.get(parent, []) if parent else [*TASK_FIELDS, "tasks", "protect"]
    close = difflib.get_close_matches(leaf, choices, n=1, cutoff=0.6)
    return f" (did you mean '{parent + '.' if parent else ''}{close[0]}'?)" if close else ""


def yaml_error_text(text: str, where: str) -> str | None:
    """A YAML syntax error with the offending line and a caret, or None if it parses."""
    try:
        yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if mark is None:
            return f"{where}: invalid YAML: {problem}"
        lines = text.splitlines() or [""]
        line = lines[min(mark.line, len(lines) - 1)]
        return (f"{where}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {problem}\n"
                f"    {line}\n    {' ' * mark.column}^")
    except yaml.YAMLError as exc:
        return f"{where}: invalid YAML: {' '.join(str(exc).split())}"
    return None


def _drop(obj: dict, name: str) -> bool:
    """Remove field ``name`` (``a.b`` for nested) from ``obj``; False if absent."""
    parent, _, leaf = name.rpartition(".")
    target = obj.get(parent) if parent else obj
    if isinstance(target, dict) and leaf in target:
        del target[leaf]
        return True
    return False


def _field_named(message: str, label: str) -> str | None:
    """The field an error message of ``parse_task`` is about."""
    unknown = UNKNOWN.search(message)
    if unknown:
        return unknown.group(1)
    tail = message.split(f"task {label}: ", 1)[-1]
    first = re.match(r"([a-z_]+(?:\.[a-z_]+)?)\b", tail)
    return first.group(1) if first else None


def _task_errors(item: Any, source: str, index: int) -> tuple[Task | None, list[str]]:
    errors: list[str] = []
    obj = copy.deepcopy(item)
    for _ in range(MAX_ROUNDS):
        try:
            task = parse_task(obj, source, index)
        except PolicyError as exc:
            message = str(exc)
            label = message.split("task ", 1)[-1].split(":", 1)[0]
            name = _field_named(message, label)
            hint = did_you_mean(name) if name and UNKNOWN.search(message) else ""
            errors.append(message + hint)
            if name is None or name in ("name", "kind") or not isinstance(obj, dict) \
                    or not _drop(obj, name):
                return None, errors
            continue
        return (task if not errors else None), errors
    return None, errors


def check_policy(data: bytes, source: str) -> CheckResult:
    """Every error found in a policy file's bytes (see module docstring)."""
    where = f"policy {source}"
    out = CheckResult()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        out.errors.append(f"{where}: not valid UTF-8")
        return out
    try:
        obj = read_policy(text, source)
    except PolicyError as exc:
        first = str(exc)
        syntax = yaml_error_text(text, where) if "invalid YAML" in first \
            and "nested more than" not in first else None  # (a re-parse would recurse)
        out.errors.append(syntax if syntax is not None else first)
        return out
    return check_policy_object(obj, source)


def check_policy_object(obj: Any, source: str) -> CheckResult:
    """Every error found in a policy document already read (YAML or JSON)."""
    where = f"policy {source}"
    out = CheckResult()
    try:
        out.tasks = parse_tasks(obj, source)
        return out
    except PolicyError as exc:
        first = str(exc)
    items = obj.get("tasks") if isinstance(obj, dict) else None
    if not isinstance(items, list) or not items:
        unknown = UNKNOWN.search(first)
        out.errors.append(first + (did_you_mean(unknown.group(1)) if unknown else ""))
        return out
    if isinstance(obj, dict):
        for key in obj:
            if key not in ("tasks", "protect"):
                out.errors.append(f"{where}: unknown top-level field '{key}'"
                                  + did_you_mean(key))
    seen: set[str] = set()
    for index, item in enumerate(items):
        task, errors = _task_errors(item, source, index)
        out.errors += errors
        if task is not None:
            if task.name in seen:
                out.errors.append(f"{where}: task {task.name}: name is used by another task "
                                  "in the policy")
            seen.add(task.name)
            out.tasks.append(task)
    if not out.errors:  # a rule of the whole policy (size, count) that the tasks pass
        out.errors.append(first)
    return out
