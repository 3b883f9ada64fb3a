"""Unit tests of the overlay role: a 1+3+9 tree wired in one process.

The transport is an in-memory router (``FakeNet``) that maps URLs to
``OverlayNode`` methods the way ``host_agent/api.py`` does, with a fake
clock and ``InlineRunner`` so every step is deterministic. Agents are fakes
whose snapshots are plain totals and the merge adds them: this file tests
the overlay's logic (routing, timing, coverage, epochs). Exact sketch
merging over the union stream, with the real counters and
``report.merge_all``, is in ``test_overlay_merge`` below.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from host_agent.overlay.node import NotAChild, OverlayNode, StaleEpoch
from measure_common.runner import InlineRunner
from measure_model.task import Task
from testing.checks import some
from testing.clock import Clock
from testing.inproc import InProcAgent

CTL = "http://ctl.test:8080"
INTERVAL = 5.0
TASK = {"name": "hh", "kind": "heavy_hitters", "key": "src", "increment": "pkt",
        "report_interval": INTERVAL, "scope": "global"}


class FakeAgent:
    """What OverlayNode needs from the agent runtime; traffic is a number."""

    def __init__(self, name: str) -> None:
        self.name, self.url = name, f"http://{name}.test:8000"
        self.tasks: dict[str, Task] = {}
        self.installs = 0
        self.packets = 0
        self.fail_install = ""
        self.sketches: dict[int, Any] = {}  # no counters made by the original messages

    def install_task(self, task_id: str, task: Task, candidate_divisor: int = 1) -> int:
        if self.fail_install:
            raise RuntimeError(self.fail_install)
        self.installs += 1
        self.tasks[task_id] = task
        return self.installs

    def remove_task(self, task_id: str) -> None:
        del self.tasks[task_id]

    def snapshot_task(self, task_id: str, now: float) -> dict:
        if task_id not in self.tasks:
            raise KeyError(task_id)
        return {"packets": self.packets, "generated_at": now,
                "heavy_hitters": {f"10.0.0.{len(self.name)}": self.packets}}

    def cost(self) -> dict:
        return {"restarts": 0, "cpu_seconds": 0.5, "packets": self.packets}

    def snapshot(self, sid: Any, cid: Any, now: float | None = None) -> dict:
        raise KeyError(sid)


def add_merge(snaps: list[dict]) -> dict:
    return {"packets": sum(s["packets"] for s in snaps),
            "generated_at": min(s["generated_at"] for s in snaps)}


class FakeNet:
    """Routes transport calls to nodes like the agent's HTTP API would."""

    def __init__(self) -> None:
        self.nodes: dict[str, OverlayNode] = {}
        self.down: set[str] = set()
        self.controller: list[dict] = []
        self.calls: list[tuple[str, str, float]] = []

    def _route(self, method: str, url: str, body, timeout: float):
        self.calls.append((method, url, timeout))
        if url == f"{CTL}/measure/v1/reports":
            self.controller.append(body)
            return 200, {"accepted": True}
        base, _, path = url.partition("/agent/v1/")
        name = base.split("//")[1].split(".")[0]
        if name in self.down or name not in self.nodes:
            raise ConnectionError("connection refused")
        node = self.nodes[name]
        try:
            if path == "reports":
                return 200, node.receive_report(body)
            task_id = path.split("/", 1)[1]
            if method == "put":
                return 200, node.put_task(task_id, body)
            return 200, node.delete_task(task_id, body)
        except NotAChild as exc:
            return 409, {"error": str(exc)}
        except KeyError as exc:
            return 404, {"error": str(exc)}
        except ValueError as exc:
            return 400, {"error": str(exc)}

    def request(self, method, url, json=None, timeout=5.0):
        return self._route(method.lower(), url, json, timeout)


def peer(name: str) -> dict:
    """An overlay peer as the controller names it (``FakeNet`` routes by this URL)."""
    return {"name": name, "url": f"http://{name}.test:8000"}


class Tree:
    """h1 is the root, h2..h4 its children, h5..h13 the grandchildren."""

    def __init__(self, merge=add_merge, agent: Callable[[str], Any] = FakeAgent) -> None:
        self.make_agent = agent
        self.agents: dict[str, Any] = {}  # FakeAgent or InProcAgent, by name
        self.clock = Clock(100.0)
        self.net = FakeNet()
        self.merge = merge
        self.kids: dict[str, list[str]] = {"h1": ["h2", "h3", "h4"]}
        for i, mid in enumerate(["h2", "h3", "h4"]):
            self.kids[mid] = [f"h{5 + 3 * i + j}" for j in range(3)]
        for n in range(1, 14):
            self.add(f"h{n}")
        self.epoch = 0
        self.assign(self.kids)

    def add(self, name: str) -> OverlayNode:
        fake = self.merge is not None  # toy snapshots: no report.check_snapshot
        self.agents[name] = self.make_agent(name)
        node = OverlayNode(self.agents[name], http=self.net, now=self.clock,
                           runner=InlineRunner(), merge=self.merge,
                           check=(lambda snap: snap) if fake else None)
        self.net.nodes[name] = node
        return node

    def __getitem__(self, name: str) -> OverlayNode:
        return self.net.nodes[name]

    def assign(self, kids: dict[str, list[str]], root: str = "h1") -> None:
        """What the controller does: a new epoch pushed to every live agent."""
        self.epoch += 1
        parent = {c: p for p, cs in kids.items() for c in cs}
        for name, node in self.net.nodes.items():
            if name in self.net.down:
                continue
            node.set_overlay({
                "parent": peer(parent[name]) if name in parent else None,
                "children": [peer(c) for c in kids.get(name, [])],
                "root": name == root, "epoch": self.epoch, "controller": CTL})

    def tick_all(self, t: float, order_seed: int = 0) -> None:
        self.clock.t = t
        names = [n for n in self.net.nodes if n not in self.net.down]
        random.Random(order_seed).shuffle(names)
        for name in names:
            self[name].tick(t)


ALL = sorted(f"h{n}" for n in range(1, 14))


@pytest.fixture
def tree() -> Tree:
    return Tree()


def test_task_reaches_all_13_agents_with_per_agent_status(tree):
    from measure_model.task import parse_task

    reply = tree["h1"].put_task("t1", dict(TASK))
    assert reply == {"agents": {name: "ok" for name in ALL}}
    parsed = parse_task(TASK, "test")  # validated once, every default filled in
    for name in ALL:
        assert tree.agents[name].tasks["t1"] == parsed
    # timeouts shrink by level so a parent answers before its parent gives up
    timeouts = {url.split("//")[1].split(".")[0]: t for m, url, t in tree.net.calls}
    assert timeouts["h2"] == 4.0 and timeouts["h5"] == pytest.approx(3.2)


def test_put_again_is_idempotent_and_reaches_new_agents(tree):
    tree["h1"].put_task("t1", dict(TASK))
    assert tree["h1"].put_task("t1", dict(TASK))["agents"] == {n: "ok" for n in ALL}
    assert [tree.agents[n].installs for n in ALL] == [1] * 13


@pytest.mark.parametrize("task_id, body, message", [
    ("t1", {**TASK, "key": "srcdst"},
     "policy PUT /agent/v1/tasks/t1: task hh: key 'srcdst' is not one of src, dst, src_dst, "
     "sport, dport, src_dport, dst_dport, proto, five_tuple"),
    ("t1", {**TASK, "_overlay": {"budget": -1}},
     "task: field '_overlay.budget' must be a number from 0 to 60"),
    ("t1", {**TASK, "_overlay": {"agents": 0}},
     "task: field '_overlay.agents' must be an integer from 1 to 100000"),
    ("t/1", dict(TASK), "task: id must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"),
    ("t1", [], "task: body must be a JSON object"),
    ("t1", {"name": "bw", "kind": "bandwidth", "src": "h1", "dst": "h2"},
     "task: bandwidth tasks are run by the controller, not the overlay"),
])
def test_invalid_task_is_refused_before_anything_changes(tree, task_id, body, message):
    with pytest.raises(ValueError) as err:
        tree["h1"].put_task(task_id, body)
    assert str(err.value) == message
    assert tree["h1"].tasks == {} and tree.net.calls == []
    assert all(tree.agents[n].installs == 0 for n in ALL)


def test_failures_are_reported_per_agent(tree):
    tree.agents["h9"].fail_install = "iptables: no chain"
    tree.net.down.add("h4")
    status = tree["h1"].put_task("t1", dict(TASK))["agents"]
    assert status.pop("h9") == "error: iptables: no chain"
    assert status.pop("h4") == "error: connection refused"
    assert status == {n: "ok" for n in ALL if n not in ("h4", "h9", "h11", "h12", "h13")}


def test_unreachable_child_marks_its_known_subtree(tree):
    tree["h1"].put_task("t1", dict(TASK))
    tree.tick_all(105.0)  # reports teach h1 that h11..h13 sit below h4
    tree.net.down.add("h4")
    status = tree["h1"].put_task("t2", dict(TASK, name="t2"))["agents"]
    assert status["h4"] == "error: connection refused"
    assert [status[n] for n in ("h11", "h12", "h13")] == ["error: unreachable via h4"] * 3


def test_delete_reaches_all(tree):
    tree["h1"].put_task("t1", dict(TASK))
    assert tree["h1"].delete_task("t1") == {"agents": {n: "ok" for n in ALL}}
    assert all(not tree.agents[n].tasks and "t1" not in tree[n].tasks for n in ALL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_merged_report_per_interval_in_any_tick_order(tree, seed):
    tree["h1"].put_task("t1", dict(TASK))
    for n in range(1, 14):
        tree.agents[f"h{n}"].packets = n
    tree.tick_all(105.0, order_seed=seed)
    assert len(tree.net.controller) == 1
    rep = tree.net.controller[0]
    assert rep["task_id"] == "t1" and rep["interval_end"] == 105.0 and rep["from"] == "h1"
    assert rep["snapshot"]["packets"] == sum(range(1, 14))
    assert rep["covered"] == ALL and rep["missing"] == []
    assert rep["height"] == 2 and rep["epoch"] == 1
    # per-host lines stay in the tree: the root sends its own only; an agent and its
    # parent answer for it (``?host=`` at the controller asks them)
    assert sorted(rep["per_host"]) == ["h1"]
    (own,) = tree["h7"].host_lines("t1", "h7")
    assert own["interval_end"] == 105.0 and own["packets"] == 7
    assert own["heavy_hitters"] == {"10.0.0.2": 7}
    parent = next(p for p in ("h2", "h3", "h4") if "h7" in tree[p].state.child_names())
    assert tree[parent].host_lines("t1", "h7") == [own]
    with pytest.raises(KeyError, match="no per-host line of 'h7'"):
        tree["h1"].host_lines("t1", "h7")
    # nothing more until the next interval ends
    tree.tick_all(109.9)
    assert len(tree.net.controller) == 1
    tree.tick_all(110.0)
    assert [r["interval_end"] for r in tree.net.controller] == [105.0, 110.0]


def test_missing_subtree_is_listed_and_does_not_block_beyond_timeout(tree):
    tree["h1"].put_task("t1", dict(TASK))
    for n in range(1, 14):
        tree.agents[f"h{n}"].packets = n
    tree.tick_all(105.0)
    tree.net.down.add("h3")  # a child with three children
    tree.net.down.add("h11")  # a leaf under h4
    tree.tick_all(110.0)
    assert len(tree.net.controller) == 1  # the root still waits for h3
    tree.tick_all(110.3)  # h4 (height 1) gives up on h11 at 110.3
    assert len(tree.net.controller) == 1
    tree["h1"].tick(110.59)
    assert len(tree.net.controller) == 1
    tree["h1"].tick(110.6)  # root (height 2): 2 x 0.3 s
    rep = tree.net.controller[-1]
    assert rep["interval_end"] == 110.0
    assert rep["missing"] == ["h10", "h11", "h3", "h8", "h9"]
    lost = {3, 8, 9, 10, 11}
    assert rep["covered"] == sorted(f"h{n}" for n in range(1, 14) if n not in lost)
    # the lost agents' last states (of 105.0) are carried, marked, outside the interval
    assert rep["carried"] == {f"h{n}": 105.0 for n in lost}
    assert rep["snapshot"]["packets"] == sum(range(1, 14))


def test_wait_is_capped_by_a_share_of_the_interval_per_height(tree):
    task = dict(TASK, report_interval=0.5)
    tree.clock.t = 99.9  # installed during the interval that ends at 100.0
    tree["h1"].put_task("fast", task)
    tree.tick_all(100.0)
    tree.net.down.add("h2")
    tree.net.down.add("h8")  # a grandchild, under h3
    tree.tick_all(100.5)
    assert tree.net.controller[-1]["interval_end"] == 100.0
    sent = len(tree["h3"].timings)
    tree["h3"].tick(100.73)
    assert len(tree["h3"].timings) == sent
    tree["h3"].tick(100.74)  # height 1: min(0.3, 0.8 x 0.5 x 0.6) = 0.24 s after the end
    assert tree["h3"].timings[-1]["end"] == 100.5
    tree["h1"].tick(100.89)
    assert tree.net.controller[-1]["interval_end"] == 100.0
    tree["h1"].tick(100.9)  # the root: min(2 x 0.3, 0.8 x 0.5) = 0.4 s
    assert tree.net.controller[-1]["interval_end"] == 100.5
    assert tree.net.controller[-1]["missing"] == ["h2", "h5", "h6", "h7", "h8"]


def test_stale_epoch_is_rejected_and_changes_nothing(tree):
    node = tree["h2"]
    before = node.overlay()
    with pytest.raises(StaleEpoch, match=r"^overlay: stale epoch 0 < current 1$"):
        node.set_overlay({"parent": None, "children": [], "root": True, "epoch": 0})
    assert node.overlay() == before


@pytest.mark.parametrize("body, message", [
    ([], "overlay: body must be a JSON object"),
    ({"epoch": 2, "colour": 1}, "overlay: unknown field 'colour'"),
    ({"epoch": -1}, "overlay: field 'epoch' must be an integer from 0 to 2^53"),
    ({"epoch": True}, "overlay: field 'epoch' must be an integer from 0 to 2^53"),
    ({"epoch": 2 ** 63}, "overlay: field 'epoch' must be an integer from 0 to 2^53"),
    ({"epoch": 2, "controller": "ftp://x"}, "overlay: field 'controller' must be an http(s) URL"),
    ({"epoch": 2, "parent": {"name": "h1", "url": "http://a b"}},
     "overlay: parent field 'url' must be an http(s) URL"),
    ({"epoch": 2, "children": {}}, "overlay: field 'children' must be a list"),
    ({"epoch": 2, "parent": {"name": "h1"}},
     "overlay: parent field 'url' must be an http(s) URL"),
    ({"epoch": 2, "children": [{"name": "", "url": "http://x"}]},
     "overlay: children[0] field 'name' must be an agent name"),
    ({"epoch": 2, "children": [{"name": "h1;x", "url": "http://x"}]},
     "overlay: children[0] field 'name' must be an agent name"),
    ({"epoch": 2, "children": [{"name": "a", "url": "http://x"}] * 2},
     "overlay: field 'children' names a child twice"),
    ({"epoch": 2, "root": "yes"}, "overlay: field 'root' must be a boolean"),
])
def test_overlay_body_validation(tree, body, message):
    with pytest.raises(ValueError) as err:
        tree["h2"].set_overlay(body)
    assert str(err.value) == message


def test_report_from_a_stranger_is_refused(tree):
    tree["h1"].put_task("t1", dict(TASK))
    body = {"task_id": "t1", "from": "h5", "interval_end": 105.0, "snapshot": None,
            "covered": ["h5"], "missing": []}
    with pytest.raises(NotAChild, match="^report: 'h5' is not a child of h1$"):
        tree["h1"].receive_report(body)
    good = {**body, "from": "h2"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"interval_end": "x"}, "report: field 'interval_end' must be a time from 0 to 1e+13"),
        ({"interval_end": float("nan")},
         "report: field 'interval_end' must be a time from 0 to 1e+13"),
        ({"covered": [["h2"]]}, "report: field 'covered' must be a list of agent names"),
        ({"missing": ["h 2"]}, "report: field 'missing' must be a list of agent names"),
        ({"from": "h2;rm"}, "report: field 'from' must be an agent name"),
        ({"task_id": "../t1"}, "report: field 'task_id' must be a task id"),
        ({"epoch": 2 ** 64}, "report: field 'epoch' must be an integer from 0 to 9007199254740992"),
        ({"colour": 1}, "report: unknown field 'colour'"),
        ({"per_host": {"h2": {"packets": -1}}},
         "report: per_host 'h2': 'packets' must be a non-negative integer"),
        ({"per_host": {"h2": {"top_k": [["a", "b"]]}}},
         "report: per_host 'h2': 'top_k' must be a list of [key, count]"),
        ({"errors": {"h2": 5}}, "report: field 'errors' must map agent names to messages"),
        ({"interval_end": 10 ** 400},
         "report: field 'interval_end' must be a time from 0 to 1e+13"),
        ({"snapshot": {}}, "report: field 'snapshot' must be a counter snapshot, or null when "
                           "nothing in the subtree measures the task"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError) as err:
            tree["h1"].receive_report({**good, **change})
        assert str(err.value) == message
    assert tree["h1"].stats["reports_received"] == 0 and tree["h1"].tasks["t1"].pending == {}


def test_real_snapshots_are_checked_on_receipt():
    tree = real_tree()
    tree["h1"].put_task("t1", dict(TASK))
    body = {"task_id": "t1", "from": "h2", "interval_end": 105.0, "covered": ["h2"],
            "missing": [], "snapshot": {"key": "src", "increment": "pkt", "packets": -3}}
    with pytest.raises(ValueError,
                       match=r"^snapshot: packets must be an integer from 0 to 2\*\*63-1$"):
        tree["h1"].receive_report(body)
    body["snapshot"] = tree.agents["h2"].snapshot_task("t1", 105.0)  # missed: None, no capture
    assert tree["h1"].receive_report(body) == {"accepted": True, "late": False}


def test_reparenting_after_a_death_restores_full_coverage(tree):
    tree["h1"].put_task("t1", dict(TASK))
    for n in range(1, 14):
        tree.agents[f"h{n}"].packets = 1
    tree.tick_all(105.0)
    tree.net.down.add("h3")
    # the controller drops h3 and adopts its children under h2 and h4
    kids = {"h1": ["h2", "h4"], "h2": ["h5", "h6", "h7", "h8"],
            "h4": ["h11", "h12", "h13", "h9", "h10"]}
    tree.assign(kids)
    assert tree["h8"].parent.name == "h2" and tree["h8"].epoch == 2
    tree.tick_all(110.0)
    rep = tree.net.controller[-1]
    assert rep["interval_end"] == 110.0 and rep["epoch"] == 2
    assert rep["covered"] == [n for n in ALL if n != "h3"] and rep["missing"] == []
    assert rep["snapshot"]["packets"] == 12
    assert tree.agents["h8"].installs == 1  # already held the task: no reinstall


def test_restarted_agent_gets_its_tasks_from_its_new_parent(tree):
    tree["h1"].put_task("t1", dict(TASK))
    tree.tick_all(105.0)
    tree.net.down.add("h6")
    tree.assign({**tree.kids, "h2": ["h5", "h7"]})
    tree.net.down.discard("h6")
    fresh = tree.add("h6")  # a new process: no tasks, no overlay
    assert fresh.agent.tasks == {}
    tree.assign(tree.kids)  # h6 is back under h2: h2 pushes it the task
    assert "t1" in fresh.agent.tasks and "t1" in fresh.tasks
    tree.tick_all(110.0)
    assert tree.net.controller[-1]["covered"] == ALL


def test_silent_child_gets_its_tasks_pushed_again(tree):
    tree["h1"].put_task("t1", dict(TASK))
    tree.tick_all(105.0)
    fresh = tree.add("h6")  # restarted in place: same parent, same epoch
    tree.assign(tree.kids)
    assert fresh.agent.tasks == {}
    for k in range(1, 3):
        tree.tick_all(105.0 + 5 * k)
        tree.tick_all(105.0 + 5 * k + 0.6)
        assert fresh.agent.tasks == {} and "h6" in tree.net.controller[-1]["missing"]
    tree.tick_all(120.0)
    tree.tick_all(120.6)  # third silent interval: h2 pushes the task again
    assert "t1" in fresh.agent.tasks
    tree.tick_all(125.0)
    assert tree.net.controller[-1]["covered"] == ALL


def test_scope_list_installs_only_in_scope_and_still_forwards(tree):
    reply = tree["h1"].put_task("s1", dict(TASK, scope=["h5", "h12"]))["agents"]
    assert reply == {"agents": {n: "ok" for n in ALL}}["agents"]
    assert sorted(n for n in ALL if "s1" in tree.agents[n].tasks) == ["h12", "h5"]
    tree.tick_all(105.0)
    rep = tree.net.controller[-1]
    assert rep["covered"] == ["h12", "h5"] and rep["missing"] == []


def test_global_snapshot_at_the_root_for_legacy_queries(tree):
    tree["h1"].put_task("t1", dict(TASK))
    for n in range(1, 14):
        tree.agents[f"h{n}"].packets = n
    tree.tick_all(105.0)
    tree.agents["h1"].packets = 100  # fresh local data is seen at once
    snap = tree["h1"].global_snapshot("t1", 106.0)
    assert snap["packets"] == 100 + sum(range(2, 14))
    assert snap["covered"] == ALL and snap["missing"] == []
    assert tree["h1"].global_snapshot("nope") is None


def test_legacy_sketch_at_root_is_forwarded_without_local_install(tree):
    root = tree["h1"]
    root.agent.tasks["legacy-1"] = {"id": "legacy-1"}  # the runtime's own sketch
    reply = root.put_task("legacy-1", dict(TASK), install_local=False)
    assert reply["agents"] == {n: "ok" for n in ALL}
    assert root.agent.installs == 0 and tree.agents["h5"].installs == 1


def test_next_wakeup_points_at_interval_end_and_deadline(tree):
    tree["h1"].put_task("t1", dict(TASK))
    assert tree["h1"].next_wakeup(103.0) == pytest.approx(2.0)
    tree.net.down.add("h2")
    tree.tick_all(105.0)  # h2 never reported: its height is unknown, wait the cap
    assert tree["h1"].next_wakeup(105.1) == pytest.approx(3.9)  # 105 + 0.8 x 5
    tree.net.down.discard("h2")
    tree.tick_all(110.0)
    tree.net.down.add("h2")
    tree.tick_all(115.0)
    assert tree["h1"].next_wakeup(115.1) == pytest.approx(0.5)  # 2 levels x 0.3 s


def test_slow_children_stretch_the_wait(tree):
    tree["h1"].put_task("t1", dict(TASK))
    tree.tick_all(105.0)
    tree.tick_all(110.8)  # every report arrives 0.8 s late
    assert tree.net.controller[-1]["missing"] == []
    tree.net.down.add("h3")
    tree.tick_all(115.0)
    tree["h1"].tick(116.19)  # 1.5 x 0.8 = 1.2 s, not 2 x 0.3 s
    assert tree.net.controller[-1]["interval_end"] == 110.0
    tree["h1"].tick(116.2)
    assert tree.net.controller[-1]["interval_end"] == 115.0


# ---------------------------------------------------------------- real counters and merge

def real_tree() -> Tree:
    """The same 1+3+9 tree over real Agents (no capture) and report.merge_all."""
    return Tree(merge=None, agent=lambda name: InProcAgent(name, data_ip=f"10.0.0.{name[1:]}"))


def ip(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return (a << 24) | (b << 16) | (c << 8) | d


def feed(agent: InProcAgent, task_id: str, flows: list[tuple[str, str, int, int]],
         now: float) -> None:
    """Synthetic packets (src, dst, length, count) straight into the agent's counter."""
    import numpy as np

    from measure_model.packet.keys import HeaderBatch

    counter = agent.counter(task_id)
    src = np.repeat([ip(f[0]) for f in flows], [f[3] for f in flows])
    dst = np.repeat([ip(f[1]) for f in flows], [f[3] for f in flows])
    length = np.repeat([f[2] for f in flows], [f[3] for f in flows])
    n = len(src)
    counter.update(HeaderBatch.from_arrays(src, dst, np.full(n, 17), np.full(n, 5001),
                                           np.full(n, 5201), length), now)


def traffic(seed: int) -> dict[str, list[tuple[str, str, int, int]]]:
    """Per host: 40 light sources, one heavy pair on h7, and one pair split over h2..h4."""
    rnd = random.Random(seed)
    out = {}
    for n in range(1, 14):
        dst = f"10.0.0.{n}"
        flows = [(f"10.1.{n}.{k}", dst, rnd.randrange(60, 1500), rnd.randrange(1, 20))
                 for k in range(40)]
        if n == 7:
            flows.append(("10.9.9.9", dst, 1400, 900))
        if n in (2, 3, 4):
            flows.append(("10.8.8.8", "10.0.0.99", 1000, 300))
        out[f"h{n}"] = flows
    return out


def test_global_result_equals_the_union_stream():
    from ryu_app.service.results import MemoryStore, Results

    tree = real_tree()
    task = dict(TASK, key="src_dst", increment="bytes", threshold=0.05,
                sketch={"width": 1024, "depth": 4, "seed": 3})
    assert tree["h1"].put_task("t1", task) == {"agents": {n: "ok" for n in ALL}}
    flows = traffic(seed=5)
    exact: dict[str, int] = {}
    for name, fl in flows.items():
        feed(tree.agents[name], "t1", fl, 104.0)
        for src, dst, length, count in fl:
            exact[f"{src},{dst}"] = exact.get(f"{src},{dst}", 0) + length * count
    tree.tick_all(105.0)
    (rep,) = tree.net.controller
    snap = rep["snapshot"]
    total = sum(exact.values())
    assert snap["bytes"] == total == snap["total"]
    assert snap["packets"] == sum(c for fl in flows.values() for *_, c in fl)
    assert rep["covered"] == ALL and rep["missing"] == []
    truth = {k for k, v in exact.items() if v >= 0.05 * total}
    assert truth == {"10.9.9.9,10.0.0.7", "10.8.8.8,10.0.0.99"}
    assert set(snap["heavy_hitters"]) == truth
    for key, est in snap["heavy_hitters"].items():
        assert exact[key] <= est <= exact[key] + 2 * total / 1024
    distinct = len(exact)
    assert abs(snap["distinct"]["estimate"] - distinct) <= 0.05 * distinct
    results = Results(MemoryStore())
    results.ingest(rep, now=105.2)
    assert set(some(results.latest("t1"))["heavy_hitters"]) == truth
    # per-host detail is asked of the tree (the controller's ?host= does the same)
    (h7,) = results.host_results("t1", "h7", {"results": tree["h7"].host_lines("t1", "h7")},
                                 now=105.3)
    assert h7["host"] == "h7" and h7["interval_end"] == 105.0
    assert h7["bytes"] == sum(length * c for _, _, length, c in flows["h7"])
    assert h7["heavy_hitters"] == {"10.9.9.9,10.0.0.7": 1400 * 900}


def _light_everywhere_heavy_in_sum(tree: Tree, task_id: str, now: float) -> None:
    """10.7.7.7 sends 100 packets to each of the 13 agents (1,300 in all, 100 on each),
    beside 30 sources of 1..60 packets per agent."""
    rnd = random.Random(11)
    for n in range(1, 14):
        flows = [(f"10.2.{n}.{k}", f"10.0.0.{n}", 100, rnd.randrange(1, 61)) for k in range(30)]
        flows.append(("10.7.7.7", f"10.0.0.{n}", 100, 100))
        feed(tree.agents[f"h{n}"], task_id, flows, now)


@pytest.mark.parametrize("hint", [True, False])
def test_absolute_threshold_finds_a_key_light_on_every_agent(hint):
    """Real Agents and monitor cores: a global threshold_abs task with T = 1,300.

    The key has 100 packets on each agent (below T everywhere) and 1,300 in the
    merged result, so it is found only if every counter keeps candidates from
    T / 13 = 100: the divisor must reach the counters through install_task.
    Without a hint the root counts the agents its reports covered.
    """
    tree = real_tree()
    task = dict(TASK, threshold_abs=1300)
    if not hint:
        warmup = dict(TASK, name="warmup")
        assert tree["h1"].put_task("w", warmup)["agents"] == {n: "ok" for n in ALL}
        tree.tick_all(105.0)  # the root learns the 13 agents from the reports
        tree.net.controller.clear()
    body = dict(task, _overlay={"agents": 13}) if hint else task
    assert tree["h1"].put_task("t1", body) == {"agents": {n: "ok" for n in ALL}}
    for name in ALL:
        agent = tree.agents[name]
        counter = agent.counter("t1")
        assert (counter.spec.threshold_abs, counter.spec.candidate_divisor) == (1300, 13)
    now = 109.0 if not hint else 104.0
    _light_everywhere_heavy_in_sum(tree, "t1", now)
    tree.tick_all(now + 1.0)
    rep = next(r for r in tree.net.controller if r["task_id"] == "t1")
    snap = rep["snapshot"]
    assert rep["covered"] == ALL and snap["threshold"] == {"absolute": 1300, "divisor": 13}
    assert snap["heavy_hitters"] == {"10.7.7.7": 1300}
    assert all("10.7.7.7" not in tree[n].host_lines("t1", n)[0]["heavy_hitters"]
               for n in ALL)


def test_fractional_threshold_needs_no_divisor(tree):
    tree["h1"].put_task("t3", dict(TASK, name="t3", _overlay={"agents": 13}))
    assert tree.agents["h5"].tasks["t3"].threshold == 0.05


def test_overlay_scale_bench_runs(tmp_path):
    """bench/overlay_scale.py at N=10: one controller message per interval, all covered."""
    import json
    import subprocess
    import sys

    from testing.netns import ROOT

    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "bench/overlay_scale.py", "--sizes", "10",
                           "--reps", "1", "--json", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["n"] == 10 and row["ctl_msgs"] == 1 and row["star_ctl_msgs"] == 20
    assert 0 < row["result_s"] < 5 and 0 < row["config_s"] < 5


def test_legacy_counter_at_the_root_answers_for_the_whole_tree():
    """The original usage: config sketch + counter at the root, global queries there."""
    import numpy as np

    from measure_model.packet.keys import HeaderBatch
    from measure_model.wire.report import estimate, heavy_hitters_of

    tree = real_tree()
    root = tree.agents["h1"]
    sid = root.create_sketch({"interface": "INPUT", "proto": "udp"}).id
    cid = root.add_counter(sid, {"key": "src", "increment": "pkt"})
    assert tree["h1"].share_legacy_counter(sid, cid) == {"agents": {n: "ok" for n in ALL}}
    assert tree["h5"].share_legacy_counter(sid, cid) is None  # a leaf has nobody to ask
    task = tree.agents["h9"].tasks  # children hold it as an ordinary task
    assert list(task) == [f"legacy-{sid}-{cid}"]
    for n in range(1, 14):  # 10.0.0.77 sends 30 packets to every host, others 1..13
        agent = tree.agents[f"h{n}"]
        s, c = (sid, cid) if n == 1 else (agent.tasks[f"legacy-{sid}-{cid}"], 1)
        counter = agent.sketch_counter(s, c)
        flows = [("10.0.0.77", f"10.0.0.{n}", 100, 30), (f"10.2.0.{n}", f"10.0.0.{n}", 100, n)]
        src = np.repeat([ip(f[0]) for f in flows], [f[3] for f in flows])
        k = len(src)
        counter.update(HeaderBatch.from_arrays(src, np.full(k, ip(f"10.0.0.{n}")),
                                               np.full(k, 17), np.full(k, 1), np.full(k, 2),
                                               np.full(k, 100)), 104.0)
    tree.tick_all(105.0)
    # the subtree reports to the root, and the root keeps them: the controller
    # never heard of a legacy-S-C task (it answered 404 every interval)
    assert tree["h1"].stats["reports_received"] == 3 and tree["h1"].stats["reports_sent"] == 0
    assert tree.net.controller == []
    snap = some(tree["h1"].legacy_global(sid, cid, 105.5))
    assert snap["covered"] == ALL and snap["packets"] == 13 * 30 + sum(range(1, 14))
    assert estimate(snap, "10.0.0.77") == 13 * 30
    assert heavy_hitters_of(snap) == {"10.0.0.77": 390}  # 10.2.0.13 has 13 < 5% of 481
    assert tree["h1"].legacy_global(sid, 99) is None
    tree["h1"].unshare_legacy_sketch(sid)
    assert tree.agents["h9"].tasks == {} and tree["h1"].legacy == {}


def test_port_scan_spread_over_hosts_is_found_globally():
    """10 ports on each of three hosts: below scan_ports=20 everywhere, 30 in aggregate."""
    import numpy as np

    from measure_model.packet.keys import HeaderBatch
    from ryu_app.service.results import MemoryStore, Results

    tree = real_tree()
    task = {"name": "scan", "kind": "port_scan", "key": "src_dport", "increment": "pkt",
            "scan_ports": 20, "report_interval": INTERVAL,
            "window": {"length": INTERVAL, "mode": "sliding"},
            "sketch": {"width": 1024, "depth": 4, "seed": 3}}
    assert tree["h1"].put_task("s1", task) == {"agents": {n: "ok" for n in ALL}}
    for i, name in enumerate(["h5", "h9", "h13"]):
        agent = tree.agents[name]
        counter = agent.counter("s1")
        ports = np.arange(1000 + 10 * i, 1010 + 10 * i)
        counter.update(HeaderBatch.from_arrays(
            np.full(10, ip("10.0.0.66")), np.full(10, ip(agent.data_ip)), np.full(10, 6),
            np.full(10, 40000), ports, np.full(10, 40), tcp_flags=np.full(10, 0x02)), 104.5)
    tree.tick_all(105.0)
    (rep,) = tree.net.controller
    assert sorted(rep["snapshot"]["scan"]["10.0.0.66"]["ports"]) == list(range(1000, 1030))
    assert tree["h9"].host_lines("s1", "h9")[0]["scan"] == {"10.0.0.66": 10}
    results = Results(MemoryStore())
    (event_id,) = results.ingest(rep, now=105.1)
    (event,) = results.events()
    assert (event["id"], event["kind"], event["src"], event["ports"]) == (
        event_id, "port_scan", "10.0.0.66", 30)
    assert sorted(event["dsts"]) == ["10.0.0.13", "10.0.0.5", "10.0.0.9"]


def test_default_merge_does_not_check_snapshots_again_a_custom_check_does(monkeypatch):
    from host_agent.overlay import node as overlay_node
    from measure_model.sketch.countmin import CountMinSketch
    from measure_model.wire import report

    calls = []

    def check(snap: dict) -> dict:
        calls.append(snap)
        return snap

    monkeypatch.setattr(report, "check_snapshot", check)
    snap = {"key": "src", "increment": "pkt", "packets": 0, "bytes": 0, "total": 0,
            "sketch": CountMinSketch(64, 1, 1).to_wire(), "distinct": {"estimate": 0}}
    node = overlay_node.OverlayNode(FakeAgent("h1"), http=FakeNet(), runner=InlineRunner())
    assert some(node.merge([snap]))["packets"] == 0 and calls == []
    node = overlay_node.OverlayNode(FakeAgent("h1"), http=FakeNet(), runner=InlineRunner(),
                                    check=lambda s: s)
    assert some(node.merge([snap]))["packets"] == 0 and calls == [snap]


def test_first_report_is_not_for_an_interval_that_ended_before_the_install(tree):
    tree.clock.t = 100.2
    tree["h1"].put_task("late", dict(TASK, report_interval=1.0))
    tree.tick_all(100.5)
    assert tree.net.controller == []  # the interval ending at 100.0 predates the task
    tree.tick_all(101.0)
    assert [r["interval_end"] for r in tree.net.controller] == [101.0]


def test_drop_stale_removes_only_old_controller_tasks_missing_from_the_live_list(tree):
    import time

    tree["h1"].put_task("7", dict(TASK))
    tree["h1"].put_task("8", dict(TASK))
    tree["h1"].put_task("legacy-1-2", dict(TASK))
    registered_at = time.monotonic()
    tree["h1"].put_task("9", dict(TASK))  # pushed while the registration was on its way
    assert tree["h1"].drop_stale(["8"], registered_at) == ["7"]
    for name in ALL:  # removed here and below
        assert sorted(tree.agents[name].tasks) == ["8", "9", "legacy-1-2"]
    assert tree["h1"].drop_stale(None, time.monotonic()) == []  # a controller that does not say
    assert sorted(tree.agents["h1"].tasks) == ["8", "9", "legacy-1-2"]
