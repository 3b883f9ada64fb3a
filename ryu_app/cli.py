"""``measure``: the command line for people, over the controller's REST API.

::

    measure check policies/heavy_hitter.yaml     # validate offline, exit 1 on error
    measure apply policies/heavy_hitter.yaml     # POST the policy -> task ids
    measure tasks                                # table of tasks and their status
    measure result 1 [--host h5] [--json]        # latest result as a table
    measure delete 1
    measure topology | overlay | agents | events [--since N]
    measure bw h5 h6 [--method bulk]

``--url`` (default ``$MEASURE_URL`` or http://127.0.0.1:8080) names the
controller; ``--token-file`` (default ``$MEASURE_TOKEN_FILE``, else the
controller's default token file when readable) supplies the bearer token.
Every command but ``check`` talks to the controller. Rendering is done by
plain functions (``render_*``) that take the API's JSON and return text, so
tests check them without a controller. Exit status: 0 ok, 1 refused by the
controller or invalid policy, 2 controller unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from measure_model.policy import load_policy
from measure_model.task import PolicyError

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TOKEN_FILE = "/var/lib/endhost-measure/controller.token"


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- rendering

def render_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Left-aligned columns separated by two spaces; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r]
                                           for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(isinstance(r[i], int | float) and not isinstance(r[i], bool)
                   for r in rows) and rows for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [c.rjust(w) if numeric[i] else c.ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def render_tasks(tasks: list[dict]) -> str:
    if not tasks:
        return "no tasks"
    rows = []
    for t in tasks:
        agents = t.get("agents") or {}
        ok = sum(1 for v in agents.values() if v == "ok")
        rows.append([t["id"], t["name"], t["kind"], t["status"],
                     f"{ok}/{len(agents)}" if agents else None, t.get("last_error")])
    return render_table(["ID", "NAME", "KIND", "STATUS", "AGENTS OK", "ERROR"], rows)


def _number(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def render_result(result: dict) -> str:
    """A measurement or bandwidth result as a header and a table of counts."""
    lines = [f"task {result.get('task_id')}  host {result.get('host', '*')}  "
             f"kind {result.get('kind') or '-'}  age {result.get('age', '-')}s"]
    if "covered" in result:
        missing = result.get("missing") or []
        covered = result["covered"] or []
        text = f"covered {len(covered)}" + (f": {', '.join(covered)}" if covered else "")
        lines.append(text + (f"  missing {len(missing)}: {', '.join(missing)}" if missing else
                             "  (complete)"))
    if result.get("kind") == "bandwidth":
        keys = [k for k in ("method", "src", "dst", "mbit_s", "mbytes_s", "range_mbit",
                            "duration", "probe_bytes") if k in result]
        lines.append(render_table(["FIELD", "VALUE"], [[k, result[k]] for k in keys]))
        return "\n".join(lines)
    totals = [f"{name} {_number(result[name])}" for name in ("packets", "bytes", "total")
              if name in result]
    if totals:
        lines.append("  ".join(totals))
    hh = result.get("heavy_hitters") or {}
    top = result.get("top_k") or []
    if hh:
        rows = sorted(hh.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("heavy hitters")
        lines.append(render_table([str(result.get("key", "KEY")).upper(), "COUNT"],
                                  [[k, _number(v)] for k, v in rows]))
    if top:
        lines.append("top k")
        lines.append(render_table([str(result.get("key", "KEY")).upper(), "COUNT"],
                                  [[k, _number(v)] for k, v in top]))
    scanners = result.get("scanners") or {}
    if scanners:
        lines.append("port scans")
        lines.append(render_table(["SRC", "PORTS"], sorted(scanners.items())))
    distinct = result.get("distinct")
    if isinstance(distinct, dict) and "estimate" in distinct:
        lines.append(f"distinct keys ~{distinct['estimate']}")
    if not hh and not top and not scanners:
        lines.append("no heavy hitters")
    return "\n".join(lines)


def render_history(history: dict) -> str:
    """One line per past result, newest first."""
    rows = []
    for r in history.get("results", []):
        hh = sorted((r.get("heavy_hitters") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        missing = r.get("missing")
        rows.append([_number(r.get("interval_end")), _number(r.get("age")),
                     len(r["covered"]) if isinstance(r.get("covered"), list) else None,
                     len(missing) if isinstance(missing, list) else None,
                     _number(r.get("total")), f"{hh[0][0]} {_number(hh[0][1])}" if hh else None])
    if not rows:
        return f"task {history.get('task_id')}: no results yet"
    return (f"task {history.get('task_id')}  host {history.get('host', '*')}\n"
            + render_table(["INTERVAL END", "AGE S", "COVERED", "MISSING", "TOTAL",
                            "TOP HEAVY HITTER"], rows))


def render_overlay(overlay: dict) -> str:
    root = overlay.get("root")
    if root is None:
        return f"epoch {overlay.get('epoch', 0)}: no live agents"
    children = overlay.get("children", {})
    lines = [f"epoch {overlay.get('epoch')}  depth {overlay.get('depth')}  "
             f"fanout {overlay.get('fanout')}  agents {len(overlay.get('parent', {}))}"]

    def walk(node: str, prefix: str, last: bool, top: bool) -> None:
        lines.append(node if top else f"{prefix}{'`-- ' if last else '|-- '}{node}")
        kids = children.get(node, [])
        for i, kid in enumerate(kids):
            walk(kid, "" if top else prefix + ("    " if last else "|   "),
                 i == len(kids) - 1, False)

    walk(root, "", True, True)
    if overlay.get("unlocated"):
        lines.append(f"not located in the topology: {', '.join(overlay['unlocated'])}")
    return "\n".join(lines)


def render_topology(topo: dict) -> str:
    out = [render_table(["SWITCH", "PORTS"], [[s["dpid"], ",".join(map(str, s["ports"]))]
                                              for s in topo.get("switches", [])])]
    out.append(render_table(["LINK", "PORT", "TO", "PORT"],
                            [[lk["src"]["dpid"], lk["src"]["port"], lk["dst"]["dpid"],
                              lk["dst"]["port"]] for lk in topo.get("links", [])]))
    out.append(render_table(["HOST", "IPS", "SWITCH", "PORT"],
                            [[h["mac"], ",".join(h.get("ips", [])), h["dpid"], h["port"]]
                             for h in topo.get("hosts", [])]))
    return "\n\n".join(out)


def render_agents(agents: list[dict]) -> str:
    if not agents:
        return "no agents"
    return render_table(["NAME", "UP", "URL", "DATA IP", "HOST", "PARENT"],
                        [[a["name"], "yes" if a["up"] else "no", a["url"], a.get("data_ip"),
                          a.get("host"), a.get("parent")] for a in agents])


def render_events(events: list[dict]) -> str:
    if not events:
        return "no events"
    rows = []
    for e in events:
        detail = {k: v for k, v in e.items() if k not in ("id", "ts", "task_id", "kind")}
        rows.append([e["id"], time.strftime("%H:%M:%S", time.gmtime(e["ts"])), e["task_id"],
                     e["kind"], json.dumps(detail, sort_keys=True)])
    return render_table(["ID", "TIME", "TASK", "KIND", "DETAIL"], rows)


def render_bandwidth(reply: dict) -> str:
    keys = [k for k in ("src", "dst", "method", "mbit_s", "mbytes_s", "range_mbit_s",
                        "duration_s", "probe_bytes", "streams", "label") if k in reply]
    keys += sorted(k for k in reply if k not in keys)
    return render_table(["FIELD", "VALUE"], [[k, reply[k]] for k in keys])


# ---------------------------------------------------------------- client

class Client:
    """A small REST client: JSON in, JSON out, errors as CliError."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def call(self, method: str, path: str, body: Any = None, yaml_text: str | None = None,
             timeout: float | None = None) -> Any:
        import requests

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        kw: dict[str, Any] = {"headers": headers, "timeout": timeout or self.timeout}
        if yaml_text is not None:
            headers["Content-Type"] = "application/yaml"
            kw["data"] = yaml_text.encode()
        elif body is not None:
            kw["json"] = body
        url = f"{self.url}/measure/v1{path}"
        try:
            resp = requests.request(method, url, **kw)
        except requests.RequestException as exc:
            raise CliError(f"cannot reach the controller at {self.url}: "
                           f"{type(exc).__name__}", 2) from None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            message = data.get("error") if isinstance(data, dict) else resp.text[:200]
            raise CliError(f"HTTP {resp.status_code}: {message}")
        return data


def _token(args: argparse.Namespace) -> str | None:
    path = args.token_file or os.environ.get("MEASURE_TOKEN_FILE")
    if path is None:
        if os.environ.get("MEASURE_TOKEN"):
            return os.environ["MEASURE_TOKEN"]
        if not os.access(DEFAULT_TOKEN_FILE, os.R_OK):
            return None
        path = DEFAULT_TOKEN_FILE
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror}") from None


def _read_policy(path: str) -> tuple[str, str]:
    try:
        with open(path, "rb") as f:
            data = f.read(256 * 1024 + 1)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    name = os.path.basename(path)
    try:
        tasks = load_policy(data, name)
    except PolicyError as exc:
        raise CliError(str(exc)) from None
    return data.decode(), f"policy {name}: {len(tasks)} task(s) valid: " + \
        ", ".join(f"{t.name} ({t.kind})" for t in tasks)


def run(args: argparse.Namespace, out: Any = None) -> int:
    """Execute one parsed command; returns the exit status."""
    out = out if out is not None else sys.stdout
    if args.command == "check":
        _, summary = _read_policy(args.policy)
        print(summary, file=out)
        return 0
    client = Client(args.url, _token(args))
    as_json = getattr(args, "json", False)

    def show(data: Any, render) -> None:
        print(json.dumps(data, indent=2, sort_keys=True) if as_json else render(data), file=out)

    if args.command == "apply":
        text, _ = _read_policy(args.policy)
        created = client.call("POST", "/tasks", yaml_text=text)["tasks"]
        show(created, lambda c: "\n".join(f"task {t['id']}: {t['name']}" for t in c))
    elif args.command == "tasks":
        show(client.call("GET", "/tasks")["tasks"], render_tasks)
    elif args.command == "delete":
        client.call("DELETE", f"/tasks/{args.id}")
        print(f"task {args.id} deleted", file=out)
    elif args.command == "result":
        path = f"/tasks/{args.id}/result"
        if args.host:
            from urllib.parse import quote

            path += f"?host={quote(args.host, safe='')}"
        show(client.call("GET", path), render_result)
    elif args.command == "history":
        from urllib.parse import urlencode

        query = {"limit": args.limit, **({"host": args.host} if args.host else {})}
        show(client.call("GET", f"/tasks/{args.id}/history?{urlencode(query)}"), render_history)
    elif args.command == "topology":
        show(client.call("GET", "/topology"), render_topology)
    elif args.command == "overlay":
        show(client.call("GET", "/overlay"), render_overlay)
    elif args.command == "agents":
        show(client.call("GET", "/agents")["agents"], render_agents)
    elif args.command == "events":
        show(client.call("GET", f"/events?since={args.since}")["events"], render_events)
    elif args.command == "bw":
        body = {"src": args.src, "dst": args.dst, "method": args.method,
                "max_duration": args.max_duration}
        show(client.call("POST", "/bandwidth", body, timeout=args.max_duration + 20),
             render_bandwidth)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="measure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MEASURE_URL", DEFAULT_URL),
                        help="controller REST URL (default %(default)s)")
    parser.add_argument("--token-file", help="file holding the controller bearer token")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("check", "validate a policy offline"),
                       ("apply", "apply a policy on the controller")):
        p = sub.add_parser(name, help=text)
        p.add_argument("policy", help="YAML policy file")
        if name == "apply":
            p.add_argument("--json", action="store_true")
    for name, text in (("tasks", "list tasks"), ("topology", "discovered topology"),
                       ("overlay", "the overlay tree"), ("agents", "registered agents")):
        sub.add_parser(name, help=text).add_argument("--json", action="store_true")
    p = sub.add_parser("result", help="latest result of a task")
    p.add_argument("id")
    p.add_argument("--host", help="one host (agent name or data IP)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("history", help="past results of a task, newest first")
    p.add_argument("id")
    p.add_argument("--host", help="one host (agent name or data IP)")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--json", action="store_true")
    sub.add_parser("delete", help="delete a task").add_argument("id")
    p = sub.add_parser("events", help="events (threshold crossings, scans, coverage)")
    p.add_argument("--since", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("bw", help="available bandwidth from SRC to DST")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--method", choices=["slops", "bulk"], default="slops")
    p.add_argument("--max-duration", type=float, default=10.0)
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CliError as exc:
        print(f"measure: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
