"""Per-interval TCP health from the kernel's socket diagnostics (sock_diag, INET_DIAG).

Nothing here looks at packets: once per report interval the probe process
(``host_agent.probes.worker``, a plain process, since pyroute2's netlink
socket and eventlet's patched sockets do not mix) asks the kernel for every
TCP connection with its ``tcp_info`` through ``pyroute2.DiagSocket``
(what ``ss -ti`` shows), and keeps the connections on this host's data
addresses. Per connection, at the instant of the read:

- ``retrans``: ``tcpi_total_retrans``, segments retransmitted over its life;
- ``spurious_retrans``: ``tcpi_dsack_dups``, of those, the ones the receiver
  reported (D-SACK) as already received: a tail loss probe or a timeout fired
  because an ACK came late, nothing was lost. ``retrans - spurious_retrans``
  is what the path lost and the sender repaired;
- ``lost``: ``tcpi_lost``, segments the kernel thinks lost right now;
- ``rtt_ms``: ``tcpi_rtt``, the smoothed RTT (RFC 6298: each ACK's sample
  moves it 1/8 of the way), so what the flow's own segments see: their time in
  the queues the flow itself builds and the time the receiver takes to ACK
  (an ACK for a lone segment waits until the receiving application has read
  it), and, being an average, nearer the mean of the samples than their
  median;
- ``min_rtt_ms``: ``tcpi_min_rtt``, the smallest sample over the last 5
  minutes (``net.ipv4.tcp_min_rtt_wlen``): the path's RTT without the flow's
  own queue, the figure to hold against ping's;
- ``delivery_rate_bps``: ``tcpi_delivery_rate`` (bytes/s, bits/s here);
- ``bytes_acked``: ``tcpi_bytes_acked``.

The kernel gives RTTs in microseconds; they are milliseconds here. Per (local,
remote) address pair the connections' sums (RTT: the mean; min RTT: the
minimum). The snapshot holds the ``top`` connections by retransmissions and
every pair (``measure_model.wire.paths`` checks and merges them).
"""

from __future__ import annotations

from socket import AF_INET, AF_INET6
from typing import Any

INET_DIAG_INFO = 2
# established and the closing states that still carry data
STATES = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 8)  # ESTABLISHED FIN_WAIT1/2 CLOSE_WAIT
MAX_PAIRS = 10_000
TCP_INFO = ("tcpi_total_retrans", "tcpi_dsack_dups", "tcpi_lost", "tcpi_rtt", "tcpi_min_rtt",
            "tcpi_delivery_rate", "tcpi_bytes_acked")


def read_connections(families: tuple[int, ...] = (AF_INET, AF_INET6)) -> list[dict[str, Any]]:
    """Every TCP connection in the chosen states with its ``tcp_info`` fields."""
    from pyroute2 import DiagSocket

    out = []
    with DiagSocket() as ds:
        ds.bind()
        for family in families:
            for msg in ds.get_sock_stats(family=family, states=STATES,
                                         extensions=1 << (INET_DIAG_INFO - 1)):
                info = msg.get_attr("INET_DIAG_INFO")
                if not isinstance(info, dict):
                    continue
                conn = {"src": msg["idiag_src"], "dst": msg["idiag_dst"],
                        "sport": msg["idiag_sport"], "dport": msg["idiag_dport"]}
                conn.update((name, info.get(name, 0)) for name in TCP_INFO)
                out.append(conn)
    return out


def flow_of(host: str, conn: dict[str, Any]) -> dict[str, Any]:
    """One connection as a ``tcp.flows`` entry."""
    return {"host": host, "src": str(conn["src"]), "dst": str(conn["dst"]),
            "sport": int(conn["sport"]), "dport": int(conn["dport"]),
            "retrans": int(conn.get("tcpi_total_retrans", 0)),
            "spurious_retrans": int(conn.get("tcpi_dsack_dups", 0)),
            "lost": int(conn.get("tcpi_lost", 0)),
            "rtt_ms": conn.get("tcpi_rtt", 0) / 1000.0,
            "min_rtt_ms": conn.get("tcpi_min_rtt", 0) / 1000.0,
            "delivery_rate_bps": float(conn.get("tcpi_delivery_rate", 0)) * 8,
            "bytes_acked": int(conn.get("tcpi_bytes_acked", 0))}


def summarize(host: str, conns: list[dict[str, Any]], top: int,
              local: list[str] | None = None, exclude_ports: list[int] | None = None
              ) -> dict[str, Any]:
    """The ``tcp`` snapshot section of connections (on ``local`` addresses only when
    given; loopback never; ``exclude_ports`` on either end left out)."""
    skip = set(exclude_ports or ())
    flows = []
    for c in conns:
        if str(c["src"]).startswith("127.") or str(c["src"]) in ("::1",):
            continue
        if local is not None and str(c["src"]) not in local:
            continue
        if c["sport"] in skip or c["dport"] in skip:
            continue
        flows.append(flow_of(host, c))
    pairs: dict[str, dict[str, Any]] = {}
    for f in flows:
        key = f"{f['src']},{f['dst']}"
        p = pairs.get(key)
        if p is None:
            if len(pairs) >= MAX_PAIRS:
                continue
            p = pairs[key] = {"host": host, "flows": 0, "retrans": 0,
                              "spurious_retrans": 0, "lost": 0, "rtt_ms": 0.0,
                              "min_rtt_ms": f["min_rtt_ms"], "delivery_rate_bps": 0.0}
        p["rtt_ms"] = (p["rtt_ms"] * p["flows"] + f["rtt_ms"]) / (p["flows"] + 1)
        p["flows"] += 1
        p["retrans"] += f["retrans"]
        p["spurious_retrans"] += f["spurious_retrans"]
        p["lost"] += f["lost"]
        p["min_rtt_ms"] = min(p["min_rtt_ms"], f["min_rtt_ms"])
        p["delivery_rate_bps"] += f["delivery_rate_bps"]
    flows.sort(key=lambda f: (-f["retrans"], -f["lost"], f["src"], f["sport"]))
    return {"flows": flows[:top], "pairs": pairs, "top": top}


def tcp_section(host: str, top: int, local: list[str] | None = None,
                exclude_ports: list[int] | None = None) -> dict[str, Any]:
    """Read the kernel now and summarize (see the module docstring)."""
    return summarize(host, read_connections(), top, local, exclude_ports)
