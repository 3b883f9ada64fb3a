"""Inject random loss by hand, for a while (the README's "Find the bad link")::

    python -m testing.inject loss 0.05 s1-eth3 s2-eth1 --seconds 120

drops 5% of the packets leaving each named device (``testing.faults.random_loss``:
tc clsact egress BPF) for ``--seconds`` or until Ctrl-C, then removes exactly
what it added. Name both ends of a link for loss in both directions. Root, in
the namespace holding the devices (Mininet's switch ports are in the root one:
``sh python -m testing.inject ...`` at the ``mininet>`` prompt).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from testing.faults import random_loss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testing.inject", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("loss", help="random loss on the egress of devices")
    p.add_argument("p", type=float, help="loss probability, 0..1")
    p.add_argument("devs", nargs="+", help="devices (both ends of a link: both directions)")
    p.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    if not 0.0 <= args.p <= 1.0:
        parser.error("p must be in 0..1")
    with contextlib.ExitStack() as stack:
        for dev in args.devs:
            stack.enter_context(random_loss(dev, args.p))
        print(f"dropping {100 * args.p:g}% on {', '.join(args.devs)} for {args.seconds:g} s",
              flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            time.sleep(args.seconds)
    print("removed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
