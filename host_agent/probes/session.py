"""One probed pair's bookkeeping: probes in flight, answers, and the per-interval figures.

Plain Python with the clock passed in (times are ``time.time_ns()``
nanoseconds; the worker uses the kernel's receive timestamps, which are
on the same clock).

A probe belongs to the interval its **send time** falls in. ``close(cut)``
ends the figures of every probe sent before ``cut``: answered ones give
their RTT, unanswered ones are lost (the caller puts ``cut`` a loss timeout
in the past, so a probe still in flight is never called lost), and an
answer arriving later for a probe already counted lost is ignored. So each
probe is counted exactly once, and ``sent``/``lost`` are exact.

Forward and return losses are told apart with the reflector's receive
count, echoed in every answer (TWAMP-light has the same counters): after
the answer to sequence ``s`` the forward losses so far are ``s + 1 -
received``. The forward losses of an interval are that count's increase
between the last answers before two cuts; the rest of ``lost`` is on the
way back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ddsketch.ddsketch import BaseDDSketch

from measure_model.wire.paths import add_rtt, encode_sketch, new_sketch

NS_PER_MS = 1_000_000


@dataclass
class PairSession:
    """Probes from this host to one peer address (see the module docstring)."""

    dst: str
    address: str
    next_seq: int = 0
    pending: dict[int, int] = field(default_factory=dict)     # seq -> send time
    answered: list[tuple[int, int, float]] = field(default_factory=list)  # (t1, seq, rtt ms)
    fwd_lost_total: int = 0          # forward losses known so far (from the echoed count)
    fwd_lost_reported: int = 0

    def sent(self, now_ns: int) -> int:
        """Record that the probe numbered ``next_seq`` went out at ``now_ns``; its number."""
        seq = self.next_seq
        self.next_seq += 1
        self.pending[seq] = now_ns
        return seq

    def answer(self, seq: int, rx_ns: int, dwell_ns: int, received: int) -> float | None:
        """An echo of ``seq`` arrived at ``rx_ns`` after ``dwell_ns`` at the reflector,
        which had received ``received`` probes of this session; the RTT in ms (None for
        an unknown or late echo)."""
        t1 = self.pending.pop(seq, None)
        if t1 is None:
            return None
        rtt = max(0, rx_ns - t1 - max(0, dwell_ns)) / NS_PER_MS
        self.answered.append((t1, seq, rtt))
        self.fwd_lost_total = max(self.fwd_lost_total, min(seq + 1, max(0, seq + 1 - received)))
        return rtt

    def close(self, cut_ns: int) -> dict[str, Any]:
        """The figures of the probes sent before ``cut_ns`` (the snapshot's paths entry),
        forgotten afterwards."""
        done = [a for a in self.answered if a[0] < cut_ns]
        self.answered = [a for a in self.answered if a[0] >= cut_ns]
        lost_seqs = [s for s, t1 in self.pending.items() if t1 < cut_ns]
        for s in lost_seqs:
            del self.pending[s]
        done.sort(key=lambda a: a[1])
        sketch: BaseDDSketch = new_sketch()
        for _, _, rtt in done:
            add_rtt(sketch, rtt)
        rtts = [r for _, _, r in done]
        jitter = (sum(abs(b - a) for a, b in zip(rtts, rtts[1:], strict=False))
                  / (len(rtts) - 1)) if len(rtts) > 1 else None
        lost = len(lost_seqs)
        fwd = min(lost, max(0, self.fwd_lost_total - self.fwd_lost_reported))
        self.fwd_lost_reported += fwd
        return {"sent": len(done) + lost, "lost": lost, "lost_fwd": fwd,
                "rtt": encode_sketch(sketch), "rtt_max_ms": max(rtts) if rtts else None,
                "jitter_ms": jitter}
