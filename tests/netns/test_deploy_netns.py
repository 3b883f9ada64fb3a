"""docs/deploy.md followed literally, with network namespaces as the hosts.

Hosts: ``c`` (the controller host) and ``h1``..``h3`` (agent hosts), each a
namespace. The management network is a Linux bridge with a veth per host
(192.168.213.0/24); the data network is one Open vSwitch bridge (userspace
datapath, OpenFlow 1.3, fail mode secure) pointed at the controller, with a
veth per agent host (10.213.0.0/24). Nothing of Mininet is used.

The controller and the agents are started the way their systemd units
start them: the ``ExecStartPre=`` (``--check-config``) and ``ExecStart=``
lines are read from ``contrib/systemd/*.service`` with systemd's
directories substituted, each host has its own copy of
``/etc/endhost-measure`` written as the guide says, the secret is handed
over as the unit's credential (a 0400 copy), and the process runs with the
unit's capability bounding set (``setpriv``), as the unit's user (the
controller's ``DynamicUser=`` becomes an unprivileged uid). A global task
counts exact pings, then every process is stopped with the unit's
``KillSignal=`` and the test finds no iptables/ip6tables rule, process or
file left behind outside the state directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import requests

from testing.netns import ROOT, Netns, run, unique_name
from testing.procs import wait_until
from testing.units import UNITS, parse_unit, unit_command

pytestmark = pytest.mark.netns

MGMT_NET, DATA_NET = "192.168.213", "10.213.0"
CONTROLLER_IP = f"{MGMT_NET}.1"
REST_PORT, OF_PORT, AGENT_PORT = 8080, 6653, 8000
PINGS = 12
NOBODY = 65534


def bounding_set(unit: dict[str, list[str]]) -> str:
    caps = " ".join(unit.get("CapabilityBoundingSet", [""])).split()
    return ",".join(["-all", *(f"+{c.lower().removeprefix('cap_')}" for c in caps)])


class Host:
    """A namespace acting as a machine with its own /etc/endhost-measure."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name, self.ns = name, Netns(unique_name(f"dp{name}"))
        self.etc, self.tmp = tmp / name / "etc", tmp / name / "tmp"
        self.etc.mkdir(parents=True)
        self.tmp.mkdir(mode=0o1777)
        os.chmod(self.tmp, 0o1777)
        self.procs: list[subprocess.Popen] = []
        self.mgmt_if = self.mgmt_ip = self.data_ip = ""  # set when the site is wired
        run(["ip", "netns", "add", self.ns.name])
        self.ns.run(["ip", "link", "set", "lo", "up"])
        self.ns.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])

    def start(self, argv: list[str], log: Path, user: int | None, caps: str) -> subprocess.Popen:
        priv = ["setpriv", f"--bounding-set={caps}", "--no-new-privs"]
        if user is not None:
            priv += [f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        env = {**os.environ, "PYTHONPATH": ROOT, "TMPDIR": str(self.tmp)}  # PrivateTmp=yes
        with open(log, "ab") as out:
            proc = subprocess.Popen(self.ns.cmd([*priv, "--", *argv]), stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd="/",
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def check(self, argv: list[str]) -> subprocess.CompletedProcess:
        return self.ns.run(argv, check=False, timeout=60, env={**os.environ, "PYTHONPATH": ROOT})

    def pids(self) -> list[str]:
        return run(["ip", "netns", "pids", self.ns.name], check=False).stdout.split()

    def rules(self) -> str:
        text = ""
        for tool in ("iptables-save", "ip6tables-save"):
            text += self.ns.run([tool], check=False).stdout
        return "\n".join(line for line in text.splitlines() if "endhost-measure" in line
                         or line.startswith(":ehm-") or " ehm-" in line)

    def destroy(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        for pid in self.pids():
            run(["kill", "-9", pid], check=False)
        run(["ip", "netns", "del", self.ns.name], check=False)


@pytest.fixture
def machines():
    """A directory for the hosts' files that an unprivileged service user can traverse."""
    path = Path(tempfile.mkdtemp(prefix="ehm-deploy-"))
    os.chmod(path, 0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def site(machines):
    """Controller host, three agent hosts, management bridge, data switch; all removed."""
    tmp_path = machines
    mgmt, switch = unique_name("dpm"), unique_name("dps")
    hosts: dict[str, Host] = {}
    links: list[str] = []
    try:
        run(["ip", "link", "add", mgmt, "type", "bridge"])
        links.append(mgmt)
        run(["ip", "addr", "add", f"{MGMT_NET}.254/24", "dev", mgmt])
        run(["ip", "link", "set", mgmt, "up"])
        run(["ovs-vsctl", "--timeout=10", "add-br", switch, "--",
             "set", "bridge", switch, "datapath_type=netdev", "protocols=OpenFlow13",
             "fail_mode=secure", "--",
             "set-controller", switch, f"tcp:{CONTROLLER_IP}:{OF_PORT}"])
        for index, name in enumerate(("c", "h1", "h2", "h3")):
            host = hosts[name] = Host(name, tmp_path)
            outer, inner = unique_name("dpo"), unique_name("dpi")
            run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner])
            links.append(outer)
            run(["ip", "link", "set", inner, "netns", host.ns.name])
            run(["ip", "link", "set", outer, "master", mgmt, "up"])
            host.mgmt_if, host.mgmt_ip = inner, f"{MGMT_NET}.{1 if name == 'c' else 10 + index}"
            host.ns.run(["ip", "addr", "add", f"{host.mgmt_ip}/24", "dev", inner])
            host.ns.run(["ip", "link", "set", inner, "up"])
            if name == "c":
                continue
            outer, inner = unique_name("dpo"), unique_name("dpi")
            run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner])
            links.append(outer)
            run(["ip", "link", "set", inner, "netns", host.ns.name])
            run(["ip", "link", "set", outer, "up"])
            run(["ovs-vsctl", "--timeout=10", "add-port", switch, outer])
            host.ns.run(["ip", "addr", "add", f"{DATA_NET}.{index}/24", "dev", inner])
            host.ns.run(["ip", "link", "set", inner, "up"])
            host.ns.run(["ethtool", "-K", inner, "tx", "off"], check=False)
            host.data_ip = f"{DATA_NET}.{index}"
        yield hosts
    finally:
        for host in hosts.values():
            host.destroy()
        run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", switch], check=False)
        for link in links:
            run(["ip", "link", "del", link], check=False)


def _stop(host: Host, proc: subprocess.Popen, unit: dict[str, list[str]]) -> int:
    """Stop as systemd does: KillSignal to the main process, SIGKILL after TimeoutStopSec."""
    sig = getattr(signal, unit["KillSignal"][0])
    timeout = float(unit["TimeoutStopSec"][0])
    os.kill(proc.pid, sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{host.name}: still running {timeout} s after {sig.name}") from None


def test_deployment_guide_in_namespaces(site, machines, tmp_path):
    ctl_unit = parse_unit(UNITS / "endhost-measure-controller.service")
    agent_unit = parse_unit(UNITS / "endhost-measure-agent.service")
    c = site["c"]
    files_before = {p for p in machines.rglob("*")}

    # Controller host: /etc/endhost-measure/controller.yaml and the state directory.
    state = machines / "c" / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    (c.etc / "controller.yaml").write_text(
        f"openflow_port: {OF_PORT}\nrest_listen: 0.0.0.0\nrest_port: {REST_PORT}\n"
        f"controller_url: http://{CONTROLLER_IP}:{REST_PORT}\nfanout: 2\n")
    dirs = {"STATE_DIRECTORY": str(state)}
    ctl_argv = [a.replace("/etc/endhost-measure", str(c.etc))
                for a in unit_command(ctl_unit, "ExecStart", dirs)]
    pre = [a.replace("/etc/endhost-measure", str(c.etc))
           for a in unit_command(ctl_unit, "ExecStartPre", dirs)]
    checked = c.check(pre)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ctl_log = tmp_path / "controller.log"
    ctl = c.start(ctl_argv, ctl_log, user=NOBODY, caps=bounding_set(ctl_unit))
    base = f"http://{CONTROLLER_IP}:{REST_PORT}/measure/v1"
    try:
        wait_until(lambda: requests.get(f"{base}/openapi.json", timeout=2).status_code == 401,
                   timeout=60, interval=0.3, message="controller REST")
    except TimeoutError:
        raise AssertionError(f"controller did not start:\n{ctl_log.read_text()}") from None
    token = (state / "controller.token").read_text().strip()
    secret = state / "agent.secret"
    assert secret.stat().st_mode & 0o077 == 0 and secret.stat().st_uid == NOBODY
    headers = {"Authorization": f"Bearer {token}"}

    # Agent hosts: each its own key (HMAC of the secret and its name, docs/deploy.md
    # step 4) copied over (0600), agent.yaml, started like the unit.
    from measure_common.auth import write_agent_key

    master = secret.read_bytes().strip()  # owned by the controller's dynamic user

    agents: dict[str, subprocess.Popen] = {}
    for name in ("h1", "h2", "h3"):
        host = site[name]
        write_agent_key(str(host.etc / "agent.key"), master, name)
        os.chmod(host.etc / "agent.key", 0o600)
        (host.etc / "agent.yaml").write_text(
            f"name: {name}\ncontroller: http://{CONTROLLER_IP}:{REST_PORT}\n"
            f"listen: 0.0.0.0\nport: {AGENT_PORT}\nadvertise: http://{host.mgmt_ip}:{AGENT_PORT}\n"
            f"data_ip: {host.data_ip}\nexclude_interface: {host.mgmt_if}\n")
        creds, runtime = machines / name / "credentials", machines / name / "run"
        creds.mkdir(mode=0o700)
        runtime.mkdir(mode=0o700)
        shutil.copy(host.etc / "agent.key", creds / "agent.key")  # LoadCredential=
        os.chmod(creds / "agent.key", 0o400)
        host.runtime = runtime
        dirs = {"CREDENTIALS_DIRECTORY": str(creds), "RUNTIME_DIRECTORY": str(runtime)}
        argv = [a.replace("/etc/endhost-measure", str(host.etc))
                for a in unit_command(agent_unit, "ExecStart", dirs)]
        pre = [a.replace("/etc/endhost-measure", str(host.etc))
               for a in unit_command(agent_unit, "ExecStartPre", dirs)]
        checked = host.check(pre)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        agents[name] = host.start(argv, tmp_path / f"{name}.log", user=None,
                                  caps=bounding_set(agent_unit))

    def registered():
        rows = requests.get(f"{base}/agents", headers=headers, timeout=3).json()["agents"]
        return len([a for a in rows if a["up"]]) == 3 and rows

    rows = wait_until(registered, timeout=60, interval=0.5, message="3 agents registered")
    from measure_model.version import __version__

    assert {a["name"]: a["version"] for a in rows} == dict.fromkeys(("h1", "h2", "h3"),
                                                                     __version__)
    health = requests.get(f"{base}/health", headers=headers, timeout=3).json()
    assert health["version"] == __version__
    for name in ("h1", "h2", "h3"):
        agent_health = requests.get(f"http://{site[name].mgmt_ip}:{AGENT_PORT}/agent/v1/health",
                                    timeout=3).json()
        assert (agent_health["name"], agent_health["version"]) == (name, __version__)
    # The controller learns the hosts from their first packets (as with any OpenFlow host).
    h1, h2, h3 = site["h1"], site["h2"], site["h3"]
    for dst in (h2, h3):
        wait_until(lambda d=dst: h1.ns.run(["ping", "-c1", "-W1", d.data_ip],
                                           check=False).returncode == 0,
                   timeout=30, interval=0.5, message=f"h1 reaches {dst.name}")
    wait_until(lambda: requests.get(f"{base}/overlay", headers=headers, timeout=3)
               .json().get("root"), timeout=30, interval=0.5, message="overlay built")

    task: dict[str, Any] = {"name": "deploy-icmp", "kind": "counter",
                            "filter": {"proto": "icmp"}, "report_interval": 1}
    resp = requests.post(f"{base}/tasks", json=task, headers=headers, timeout=5)
    assert resp.status_code == 201, resp.text
    tid = resp.json()["tasks"][0]["id"]
    wait_until(lambda: requests.get(f"{base}/tasks/{tid}", headers=headers, timeout=3).json()
               ["agents"] == dict.fromkeys(("h1", "h2", "h3"), "ok"),
               timeout=30, interval=0.3, message="task on every agent")
    for dst in (h2, h3):
        out = h1.ns.run(["ping", "-c", str(PINGS), "-i", "0.05", "-q", dst.data_ip]).stdout
        assert f"{PINGS} received" in out, out
    expected = 4 * PINGS  # requests in at h2 and h3, replies in at h1

    def result():
        res = requests.get(f"{base}/tasks/{tid}/result", headers=headers, timeout=3)
        body = res.json() if res.status_code == 200 else {}
        return body if body.get("packets") == expected and body.get("complete") else None

    res = wait_until(result, timeout=30, interval=0.3, message=f"global result of {expected}")
    assert (res["packets"], res["bytes"]) == (expected, expected * 84)
    assert res["covered"] == ["h1", "h2", "h3"] and res["missing"] == []

    # Stop everything with the units' stop semantics; nothing may remain.
    for name, proc in agents.items():
        assert _stop(site[name], proc, agent_unit) == 0, (tmp_path / f"{name}.log").read_text()
    assert _stop(c, ctl, ctl_unit) in (0, -signal.SIGTERM), ctl_log.read_text()
    for name in ("h1", "h2", "h3"):
        host = site[name]
        assert host.rules() == "", f"{name} left rules:\n{host.rules()}"
        assert host.pids() == [], f"{name} left processes {host.pids()}"
        assert sorted(os.listdir(host.runtime)) == [], f"{name} left {os.listdir(host.runtime)}"
    assert c.pids() == []
    # Files: the state directory holds the store, token and secret; elsewhere only what
    # the operator put there (configs, secret copies, credentials) and empty private /tmp.
    left = {p for p in machines.rglob("*") if not p.is_relative_to(state)} - files_before
    assert left == {p for name in ("h1", "h2", "h3") for p in (
        machines / name / "credentials", machines / name / "credentials" / "agent.key",
        machines / name / "run", site[name].etc / "agent.key", site[name].etc / "agent.yaml")
    } | {c.etc / "controller.yaml"}, sorted(map(str, left))
    assert all(not any(site[n].tmp.iterdir()) for n in site), "a service left files in /tmp"
    for name in ("h1", "h2", "h3"):
        text = (tmp_path / f"{name}.log").read_text()
        assert "Traceback" not in text, text
    assert "Traceback" not in ctl_log.read_text(), ctl_log.read_text()
