"""Available bandwidth from one host to another.

Per host, with the original message to the source agent (the reply is the
estimate in MBytes/s, as the original replied)::

    sudo measure-net --allow-legacy --no-agent-on h1 --bw 10
    mininet> h1 python examples/query_bw.py --agent 10.0.0.5 --dst 10.0.0.6

Through the controller (JSON with Mbit/s, range, method, duration, probe bytes)::

    mininet> h1 python examples/query_bw.py --controller --src h5 --dst h6

On 10 Mbit/s links both print about 1.2 MBytes/s (10 Mbit/s).
"""

from __future__ import annotations

import argparse

from common import Agent, Controller, add_mode_arguments, show


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mode_arguments(parser, agent_default="10.0.0.5")
    parser.add_argument("--src", default="h5", help="source host (controller mode)")
    parser.add_argument("--dst", default="10.0.0.6", help="destination host or address")
    parser.add_argument("--method", default="slops", choices=["slops", "bulk"])
    args = parser.parse_args()
    if args.controller:
        ctl = Controller(args.controller, args.token_file)
        show(ctl.call("POST", "/bandwidth", {"src": args.src, "dst": args.dst,
                                             "method": args.method}))
    else:
        agent = Agent(args.agent or "10.0.0.5", timeout=90)
        reply = agent.post(type="query bw", src=agent.url.split("//")[1].split(":")[0],
                           dst=args.dst)
        print(f"{float(reply.text):.2f} MBytes/s", flush=True)


if __name__ == "__main__":
    main()
