"""Command lines around the bandwidth probe, for tests and the benchmark.

``python -m host_agent.bandwidth.cli``:

- ``serve``: a minimal threaded HTTP agent with only ``/agent/v1/bandwidth``
  (the real routes, ``host_agent.bandwidth.api.BandwidthApi``), unsigned;
- ``probe``: run one probe from this host and print its JSON result (exit 1
  with ``{"error", "status"}`` when it fails);
- ``cross``: bounded constant-rate UDP cross traffic (``bwprobe.send_stream``).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import webob

from host_agent.bandwidth.api import BandwidthApi, bandwidth_api
from host_agent.bandwidth.worker import raise_priority, send_stream
from host_agent.errors import AgentError
from measure_common.httpclient import HttpClient


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def serve(host: str, port: int, data_ip: str) -> None:
    """Serve only the bandwidth routes on ``host:port`` until killed."""
    api = bandwidth_api(data_ip, HttpClient())

    def app(environ: dict, start_response: Any) -> Any:
        req = webob.Request(environ)
        if BandwidthApi.serves(req.path_info):
            resp = api.handle(req)
        else:
            resp = webob.Response(json={"error": "not found"}, status=404)
        return resp(environ, start_response)

    with make_server(host, port, app, server_class=_Server, handler_class=_Quiet) as httpd:
        print(f"listening {host}:{port}", flush=True)
        httpd.serve_forever()


def cross(dst_ip: str, port: int, rate_mbit: float, duration: float, size: int) -> dict:
    """Send constant-rate UDP for at most ``duration`` s (capped at 600 s)."""
    raise_priority()
    count = int(min(duration, 600) * rate_mbit * 1e6 / 8 / size)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        out: dict[str, Any] = send_stream(sock, (dst_ip, port), 0, 0, count, size,
                                          rate_mbit * 1e6)
    span = (out["last_ns"] - out["first_ns"]) / 1e9
    out["rate_mbit"] = round((out["sent"] - 1) * size * 8 / span / 1e6, 3) if span else 0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m host_agent.bandwidth.cli")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="standalone bandwidth-only agent (tests, bench)")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--data-ip", default="127.0.0.1")
    p = sub.add_parser("probe", help="run one probe from this host, print JSON")
    p.add_argument("--src-ip", default="")
    p.add_argument("--dst-ip", required=True)
    p.add_argument("--dst-url", default=None)
    p.add_argument("--method", default="slops")
    p.add_argument("--max-duration", type=float, default=10.0)
    p.add_argument("--max-bytes", type=int, default=20_000_000)
    c = sub.add_parser("cross", help="bounded constant-rate UDP cross traffic")
    c.add_argument("--dst-ip", required=True)
    c.add_argument("--port", type=int, default=9)
    c.add_argument("--rate-mbit", type=float, required=True)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--size", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.cmd == "cross":
        print(json.dumps(cross(args.dst_ip, args.port, args.rate_mbit, args.duration,
                               args.size)), flush=True)
        return 0
    if args.cmd == "serve":
        serve(args.host, args.port, args.data_ip)
        return 0
    body: dict[str, Any] = {"dst_ip": args.dst_ip, "method": args.method,
                            "max_duration": args.max_duration, "max_bytes": args.max_bytes}
    if args.dst_url:
        body["dst_url"] = args.dst_url
    try:
        result = bandwidth_api(args.src_ip, HttpClient()).prober.probe(body)
    except AgentError as exc:
        print(json.dumps({"error": exc.message, "status": exc.status}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
