"""Flow size distribution: bytes per (source, destination) pair, network-wide.

Per host, with the original messages sent to the overlay root (the root
installs the sketch on the whole tree and answers for all of it; find the
root with ``measure overlay``)::

    sudo measure-net --allow-legacy --no-agent-on h1
    mininet> h1 python examples/flow_size_distribution.py --agent 10.0.0.2 --rounds 3 &
    mininet> pingall

Globally, through the controller (applies ``policies/flow_size_distribution.yaml``)::

    mininet> h1 python examples/flow_size_distribution.py --controller --rounds 3 &
    mininet> pingall

Every pair that exchanged ICMP shows up with its byte count, e.g.
``"10.0.0.6,10.0.0.5": 168`` (two 84-byte packets).
"""

from __future__ import annotations

import argparse
import time

from common import Agent, Controller, add_mode_arguments, rounds, run_mode, show


def per_host(args) -> None:
    agent = Agent(args.agent)
    sketch_id = agent.config_sketch(interface="INPUT", proto="icmp")
    # threshold_abs=1: list every pair seen, not only those above 5% of the total
    agent.config_counter(sketch_id, "src_dst", "bytes", threshold_abs=1)
    print(f"sketch id: {sketch_id}", flush=True)
    for _ in rounds(args.rounds):
        time.sleep(args.interval)
        show(agent.heavy_hitters(sketch_id, "src_dst"))
        print(f"h6 hits h5: {agent.query(sketch_id, 'src_dst', args.key)} bytes", flush=True)


def through_controller(args) -> None:
    ctl = Controller(args.controller, args.token_file)
    for res in ctl.follow("flow_size_distribution.yaml", args.rounds, args.interval):
        sizes = dict(res.get("top_k") or [])
        show(sizes)
        dist = res.get("flow_size") or {}
        print(f"distribution (size: flows): {dist.get('histogram')}, "
              f"{dist.get('flows')} flows", flush=True)
        print(f"h6 hits h5: {sizes.get(args.key, 0)} bytes "
              f"(covered {len(res['covered'])} agents, missing {res['missing']})",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mode_arguments(parser, agent_default="10.0.0.2")
    parser.add_argument("--key", default="10.0.0.6,10.0.0.5", help="pair to query")
    args = parser.parse_args()
    run_mode(args, per_host, through_controller)


if __name__ == "__main__":
    main()
