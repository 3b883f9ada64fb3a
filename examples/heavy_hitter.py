"""Heavy hitters: which sources send the most ICMP packets to a host.

Per host, with the original messages (h1 is the operator, outside the
monitored hosts, as in the original walk-through)::

    sudo measure-net --allow-legacy --no-agent-on h1
    mininet> h1 python examples/heavy_hitter.py --agent 10.0.0.5 --rounds 3 &
    mininet> pingall
    mininet> h1 jobs

Globally, through the controller (applies ``policies/heavy_hitter.yaml``)::

    mininet> h1 python examples/heavy_hitter.py --controller --rounds 3 &
    mininet> pingall

After one pingall every other host appears twice at h5 (its echo request
and the echo reply to h5's own ping): ``{"10.0.0.1": 2, ...}`` and
``h6 hits: 2 times``.
"""

from __future__ import annotations

import argparse
import time

from common import Agent, Controller, add_mode_arguments, rounds, run_mode, show


def per_host(args) -> None:
    agent = Agent(args.agent)
    sketch_id = agent.config_sketch(interface="INPUT", proto="icmp")
    agent.config_counter(sketch_id, "src", "pkt")
    print(f"sketch id: {sketch_id}", flush=True)
    for _ in rounds(args.rounds):
        time.sleep(args.interval)
        show(agent.heavy_hitters(sketch_id, "src"))
        print(f"h6 hits: {agent.query(sketch_id, 'src', args.key)} times", flush=True)


def through_controller(args) -> None:
    ctl = Controller(args.controller, args.token_file)
    for res in ctl.follow("heavy_hitter.yaml", args.rounds, args.interval):
        show(res["heavy_hitters"])
        print(f"h6 hits: {res['heavy_hitters'].get(args.key, 0)} times "
              f"(covered {','.join(res['covered'])})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mode_arguments(parser, agent_default="10.0.0.5")
    parser.add_argument("--key", default="10.0.0.6", help="source to query (default h6)")
    args = parser.parse_args()
    run_mode(args, per_host, through_controller)


if __name__ == "__main__":
    main()
