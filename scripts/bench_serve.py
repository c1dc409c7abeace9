"""``dvsa bench serve``: load test of the web app: concurrent clients on loopback, latency and peak memory.

    dvsa bench serve --run runs/f8k --clients 8 --requests 50      (no --run: a toy run folder is built)

Exit status 1 when any request failed or got no answer. The measuring code is `dvsa.generate.serve.bench`.
"""
from __future__ import annotations

import sys

from dvsa.generate.serve.bench import bench_serve, format_serve_table
from dvsa.scripts._args import parser


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa bench serve", __doc__)
    p.add_argument("--run", default=None, help="run folder (default: build a tiny toy run)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=50, help="requests per client")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before the remaining requests are dropped")
    args = p.parse_args(argv)
    r = bench_serve(args.run, args.clients, args.requests, args.timeout,
                    log=lambda m: print(m, file=sys.stderr))
    print(format_serve_table(r))
    return 0 if r["errors"] == 0 and r["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
