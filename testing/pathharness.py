"""A controller in process on a ring with a tail, for path-health tests: reports of
probe pairs in, suspects, re-routes and diagnoses out (``PathHarness``)."""

from __future__ import annotations

from host_agent.probes.session import PairSession
from ryu_app.net.topology import Topology
from testing.checks import some
from testing.harness import FakeAgents, Harness

MS = 1_000_000
MAC = {i: f"00:00:00:00:00:{i:02x}" for i in range(1, 6)}


def ring_and_tail() -> Topology:
    """s1-s2-s3-s4-s1 ring plus s5 hanging off s1 (a bridge); hN on port 1 of sN.
    Link ports: s_a port 10+b faces s_b."""
    topo = Topology()
    for a, b in ((1, 2), (2, 3), (3, 4), (4, 1), (1, 5)):
        topo.add_link(a, 10 + b, b, 10 + a)
        topo.add_link(b, 10 + a, a, 10 + b)
    for i in range(1, 6):
        topo.add_port(i, 1)
        topo.learn_host(MAC[i], f"10.0.0.{i}", i, 1)
    return topo


class PathHarness(Harness):
    def __init__(self, state_dir: str) -> None:
        super().__init__(state_dir, agents=FakeAgents())
        self.service.topology = self.service.actions.topology = ring_and_tail()
        self.service.pathhealth.topology = self.service.topology
        some(self.service.pathhealth.cache).topology = self.service.topology
        self.register(1, 2, 3, 4, 5)
        self.tick()

    def report(self, task_id: str, lossy: set[tuple[str, str]], lost: int = 5,
               sent: int = 50) -> dict:
        """One interval: every pair sent ``sent`` probes; lossy pairs lost ``lost`` on the
        way back."""
        paths = {}
        t0 = int(self.clock * 1e9)
        for a in range(1, 6):
            for b in range(1, 6):
                if a == b:
                    continue
                s = PairSession(f"h{b}", f"10.0.0.{b}")
                for i in range(sent):
                    seq = s.sent(t0 + i * 10 * MS)
                    if ((f"h{a}", f"h{b}") not in lossy) or i >= lost:
                        s.answer(seq, t0 + i * 10 * MS + MS, 0, seq + 1)
                paths[f"h{a}>h{b}"] = s.close(t0 + sent * 10 * MS + 1)
        hosts = [f"h{i}" for i in range(1, 6)]
        body = {"task_id": task_id, "epoch": self.service.epoch, "from": "h1",
                "interval_end": self.clock, "kind": "path_health", "generated_at": self.clock,
                "snapshot": {"paths": paths, "probes": {}, "covered": hosts},
                "covered": hosts, "missing": [], "oldest": self.clock}
        status, out = self.call("POST", "/measure/v1/reports", body)
        assert status == 202, out
        self.tick(5.0)
        return out


def crossing(h: PathHarness, a: int, b: int) -> set[tuple[str, str]]:
    """The pairs whose round trip crosses the switch link s_a - s_b."""
    ph = h.service.pathhealth
    out = set()
    for x in range(1, 6):
        for y in range(1, 6):
            p = ph.path(f"h{x}", f"h{y}") if x != y else None
            if p is not None and any(k[0] == "switch" and {k[1], k[3]} == {a, b}
                                     for k in p.links):
                out.add((f"h{x}", f"h{y}"))
    return out


def post_task(h: PathHarness, mode: str = "enforce") -> str:
    status, body = h.call("POST", "/measure/v1/tasks", {"tasks": [{
        "name": "mesh", "kind": "path_health", "peers": "all", "report_interval": 5,
        "on": [{"event": "link_suspect", "action": "avoid_link", "duration": 30,
                "mode": mode}]}]})
    assert status == 201, body
    return body["tasks"][0]["id"]
