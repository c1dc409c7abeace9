"""``dvsa serve``: a local web app over a run folder: upload a photo, see its caption, dense region captions and
a sentence's alignment; with an index, search the photos.

    dvsa serve runs/f8k --index runs/mine_index --port 8000      # then open http://127.0.0.1:8000/

Binds to 127.0.0.1 unless --host says otherwise. Routes and limits: `dvsa.generate.serve.app`.
"""
from __future__ import annotations

import sys

from dvsa.generate.serve.app import Limits, create_app
from dvsa.scripts._args import add_device_arg, parser

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa serve", __doc__)
    p.add_argument("run_dir", help="pipeline run folder (RUN/gen_full, RUN/gen_region, RUN/align ...)")
    p.add_argument("--index", default=None, help="photo index folder (dvsa index) for search")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument("--max-bytes", type=int, default=Limits.max_bytes, help="largest request body, bytes (413 above)")
    p.add_argument("--max-pixels", type=int, default=Limits.max_pixels, help="largest image, pixels (400 above)")
    add_device_arg(p)
    args = p.parse_args(argv)
    import uvicorn  # the web server: imported only by the command that serves

    app = create_app(args.run_dir, args.index, Limits(max_bytes=args.max_bytes, max_pixels=args.max_pixels),
                     device=args.device)
    if args.host not in LOOPBACK:
        print(f"dvsa serve: listening on {args.host}: reachable from other machines", file=sys.stderr)
    print(f"dvsa serve: http://{args.host}:{args.port}/", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
