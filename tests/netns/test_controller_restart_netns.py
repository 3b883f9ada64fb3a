"""The controller killed (SIGKILL) and started again on the same state dir.

Real processes, real iptables/NFQUEUE and real packets: the controller
(``python -m ryu_app``) runs in namespace ``a``, one agent in namespace ``b``
signed with the controller's ``agent.secret``; ``a`` pings ``b`` and the
agent counts the ICMP echo requests with a ``counter`` task (report interval
1 s). Snapshots are cumulative since the task was installed, so every
result at the controller carries the packets counted so far.

What the test asserts was *kept* and *reported*:

- before the kill: the result counts exactly the N pings, and the history
  (read back over REST) is cumulative: non-decreasing packet counts, one row
  per interval;
- while the controller is down: traffic flows, the agent keeps the task and
  counts the M pings sent meanwhile (its own ``/agent/v1`` snapshot, nothing
  missed), and its reports to the controller fail (``send_errors`` grows);
- after the restart: the task has the same id and definition; the rows of
  the history from before the kill come back unchanged from SQLite; the
  agent registers again (heartbeat 404), the overlay epoch grows, the task
  is re-pushed without resetting the agent's counter, and the new results
  count N + M (then N + M + K) exactly: nothing measured during the outage
  was lost or counted twice. The outage intervals are absent from the
  history (the agent does not replay reports), never invented.
"""

from __future__ import annotations

import signal

import pytest

from measure_common.auth import HmacAuth, load_or_create_secret, to_agent
from testing.agentproc import AgentProc, ping_counts, snapshot_when
from testing.controllers import ControllerInNetns
from testing.procs import wait_until

pytestmark = pytest.mark.netns

N_BEFORE, M_DOWN, K_AFTER = 20, 13, 7
PING_BYTES = 84  # IPv4 total length of a default ping (20 + 8 + 56)
TASK = {"name": "icmp-count", "kind": "counter", "filter": {"proto": "icmp"},
        "report_interval": 1}


def _ok(resp) -> dict:
    assert resp.status_code == 200, (resp.status_code, resp.text)
    return resp.json()


def _ping(ns, dst: str, count: int) -> None:
    out = ns.run(["ping", "-c", str(count), "-i", "0.02", "-q", dst]).stdout
    assert ping_counts(out) == (count, count), out


def _no_age(rows: list[dict]) -> list[dict]:
    """History rows without ``age`` (computed when read, so it differs per read)."""
    return [{k: v for k, v in row.items() if k != "age"} for row in rows]


def _overlay_stats(ag: AgentProc, auth: HmacAuth) -> dict:
    resp = ag.request("GET", "/agent/v1/overlay", auth=auth)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _result_with(ctl: ControllerInNetns, packets: int, after: float = 0.0,
                 epoch: int = 0) -> dict:
    """Poll the task's result until one after ``after``, of epoch ``epoch`` or newer,
    counts at least ``packets`` (the caller asserts the exact figures)."""
    def ready():
        resp = ctl.get("/measure/v1/tasks/1/result")
        if resp.status_code != 200:
            return None
        res = resp.json()
        return res if (res["interval_end"] > after and res["epoch"] >= epoch
                       and res["packets"] >= packets) else None

    return wait_until(ready, timeout=30, interval=0.2,
                      message=f"a result with {packets} packets after {after}, epoch {epoch}")


def _check_cumulative(rows: list[dict]) -> None:
    """History rows (newest first): one per interval, counts never going down. A row
    of an interval nothing measured (the root's sketch not yet installed: it reports
    itself missing with no snapshot) has no counts."""
    ends = [r["interval_end"] for r in rows]
    assert ends == sorted(set(ends), reverse=True), ends  # no interval twice
    empty = [r for r in rows if not r["covered"]]
    assert all("packets" not in r and r["missing"] == ["h2"] for r in empty), empty
    rows = [r for r in rows if r["covered"]]
    packets = [r["packets"] for r in rows]
    assert packets == sorted(packets, reverse=True), packets
    assert all(r["bytes"] == r["packets"] * PING_BYTES for r in rows), rows


def test_controller_killed_and_restarted_keeps_history_and_counts(ns_pair, agent_factory,
                                                                  controller_in):
    a, b = ns_pair
    ctl = controller_in(a)
    secret_file = ctl.state_dir / "agent.secret"
    signed = to_agent(load_or_create_secret(str(secret_file))[0], "h2")
    ag = agent_factory(b, extra=["--controller", ctl.url, "--advertise",
                                 f"http://{b.ip}:8000", "--secret-file", str(secret_file)],
                       client_ns=a)
    resp = ctl.request("POST", "/measure/v1/tasks", json=TASK)
    assert (resp.status_code, resp.json()) == (201, {"tasks": [{"id": "1", "name": TASK["name"]}]})
    task_before = wait_until(lambda: (t := _ok(ctl.get("/measure/v1/tasks/1")))
                             ["agents"] == {"h2": "ok"} and t, timeout=30,
                             message="task installed on h2")
    assert task_before["status"] == "active"
    (sketch,) = ag.v1("GET", "/sketches")
    assert sketch["task"] == "1"
    sid = sketch["id"]
    epoch_before = _ok(ctl.get("/measure/v1/overlay"))["epoch"]
    # ---- N pings, counted at the controller
    _ping(a, b.ip, N_BEFORE)
    res = _result_with(ctl, N_BEFORE)
    assert (res["packets"], res["bytes"], res["total"]) == (
        N_BEFORE, N_BEFORE * PING_BYTES, N_BEFORE)
    assert (res["host"], res["covered"], res["missing"], res["complete"]) == (
        "*", ["h2"], [], True)
    assert res["missed"] == {"packets": 0, "bytes": 0}
    host = _ok(ctl.get("/measure/v1/tasks/1/result?host=h2"))
    assert (host["host"], host["packets"]) == ("h2", N_BEFORE)
    hist_before = _ok(ctl.get("/measure/v1/tasks/1/history?limit=1000"))
    assert (hist_before["task_id"], hist_before["host"]) == ("1", "*")
    rows_before = hist_before["results"]
    assert rows_before and rows_before[0]["packets"] == N_BEFORE
    _check_cumulative(rows_before)
    assert {r["epoch"] for r in rows_before} == {epoch_before}
    events_before = _ok(ctl.get("/measure/v1/events"))["events"]

    # ---- SIGKILL: no clean shutdown, nothing flushed on purpose
    sent_before = _overlay_stats(ag, signed)["stats"]
    ctl.proc.send_signal(signal.SIGKILL)
    assert ctl.proc.wait(10) == -signal.SIGKILL
    _ping(a, b.ip, M_DOWN)  # traffic flows without the controller
    snap = snapshot_when(ag, sid, 1, N_BEFORE + M_DOWN)
    assert (snap["packets"], snap["bytes"]) == (
        N_BEFORE + M_DOWN, (N_BEFORE + M_DOWN) * PING_BYTES)
    assert snap["missed"] == {"packets": 0, "bytes": 0}
    # the agent keeps reporting every interval; the reports fail while the controller is down
    wait_until(lambda: _overlay_stats(ag, signed)["stats"]["send_errors"]
               >= sent_before["send_errors"] + 2, timeout=15,
               message="two failed reports while the controller is down")
    assert ag.v1("GET", "/health")["tasks"] == ["1"]

    # ---- the controller again, on the same state dir
    ctl2 = controller_in(a)
    task_after = _ok(ctl2.get("/measure/v1/tasks/1"))
    assert (task_after["id"], task_after["name"], task_after["kind"], task_after["task"],
            task_after["created"]) == ("1", TASK["name"], "counter", task_before["task"],
                                       task_before["created"])
    assert [t["id"] for t in _ok(ctl2.get("/measure/v1/tasks"))["tasks"]] == ["1"]
    # the history from before the kill, read back from SQLite by the new process
    last_before = rows_before[0]["interval_end"]
    rows_now = _ok(ctl2.get("/measure/v1/tasks/1/history?limit=1000"))["results"]
    kept = [r for r in rows_now if r["interval_end"] <= last_before]
    assert _no_age(kept) == _no_age(rows_before)
    # The agent registers again (new epoch) and reports. Wait for that on the history
    # only: GET result would load the last stored result into memory, and the first
    # report must be compared with it without help (no heavy_hitter event again).
    wait_until(lambda: any(r["epoch"] > epoch_before for r in _ok(
        ctl2.get("/measure/v1/tasks/1/history?limit=1"))["results"]), timeout=30,
        message="a report of the new epoch")
    assert _ok(ctl2.get("/measure/v1/events"))["events"] == events_before
    # the re-pushed task did not reset the agent's counter: the first result of the
    # new epoch holds the outage's packets exactly
    res = _result_with(ctl2, N_BEFORE + M_DOWN, after=last_before, epoch=epoch_before + 1)
    assert (res["packets"], res["bytes"], res["total"]) == (
        N_BEFORE + M_DOWN, (N_BEFORE + M_DOWN) * PING_BYTES, N_BEFORE + M_DOWN)
    assert (res["covered"], res["missing"], res["complete"]) == (["h2"], [], True)
    (agent,) = _ok(ctl2.get("/measure/v1/agents"))["agents"]
    assert (agent["name"], agent["up"], agent["url"]) == ("h2", True, f"http://{b.ip}:8000")
    assert agent["joins"] == 1  # the registry is in memory: the new process saw one join
    log = ag.log()  # the agent's side: registered twice, the controller back in between
    assert log.count(f"registered with {ctl.url} as h2") == 2, log
    assert f"controller {ctl.url} reachable again" in log, log
    assert _ok(ctl2.get("/measure/v1/overlay"))["epoch"] == res["epoch"]
    wait_until(lambda: _ok(ctl2.get("/measure/v1/tasks/1"))["agents"] == {"h2": "ok"},
               timeout=15, message="task re-pushed to the root")
    assert ag.v1("GET", "/sketches") == [sketch]  # the same sketch: not reinstalled
    # ---- K more pings after the restart
    _ping(a, b.ip, K_AFTER)
    total = N_BEFORE + M_DOWN + K_AFTER
    res = _result_with(ctl2, total, after=res["interval_end"], epoch=res["epoch"])
    assert (res["packets"], res["bytes"]) == (total, total * PING_BYTES)
    snap = ag.v1("GET", f"/sketches/{sid}/counters/1")
    assert (snap["packets"], snap["missed"]) == (total, {"packets": 0, "bytes": 0})
    # the whole history: the old rows unchanged, then the new ones, cumulative throughout
    rows_after = _ok(ctl2.get("/measure/v1/tasks/1/history?limit=1000"))["results"]
    _check_cumulative(rows_after)
    assert _no_age([r for r in rows_after if r["interval_end"] <= last_before]) == \
        _no_age(rows_before)
    # newer rows: N (ingested between the read and the kill), then N + M from the
    # first report the new process took, then up to N + M + K; nothing in between
    # N and N + M (no report reached a dead controller) and nothing above the total
    measured = [r for r in rows_after if r["covered"]]
    new = [r["packets"] for r in reversed(measured) if r["interval_end"] > last_before]
    assert set(new) <= {N_BEFORE} | set(range(N_BEFORE + M_DOWN, total + 1)), new
    assert N_BEFORE + M_DOWN in new and new[-1] == total, new
    # the intervals of the outage are absent, not invented: at least the two
    # failed reports' intervals are missing between the last N row and the first N + M row
    last_n = max(r["interval_end"] for r in measured if r["packets"] <= N_BEFORE)
    first_nm = min(r["interval_end"] for r in measured if r["packets"] > N_BEFORE)
    assert first_nm - last_n >= 3.0, (last_n, first_nm)
    # events: what the first process recorded, with the same ids, and nothing new
    # (the heavy hitter was one before the kill; coverage never changed)
    assert [e["kind"] for e in events_before] == ["heavy_hitter"]
    (first_hh,) = [r for r in rows_before if r["interval_end"] == events_before[0]["interval_end"]]
    assert (events_before[0]["key"], events_before[0]["value"]) == (a.ip, first_hh["packets"])
    assert first_hh["packets"] > 0 and first_hh["heavy_hitters"] == {a.ip: first_hh["packets"]}
    assert _ok(ctl2.get("/measure/v1/events"))["events"] == events_before
