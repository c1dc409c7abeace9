"""``dvsa report RUN_DIR``: rebuild the self-contained HTML report of a pipeline run folder
(`generate.pipeline.report`)."""
from __future__ import annotations

import argparse
import sys

from dvsa.generate.pipeline import rebuild_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dvsa report", description="rebuild report.html of a pipeline run folder")
    p.add_argument("run", help="the pipeline's --out folder (holds results.json)")
    p.add_argument("--out", default=None, help="where to write the HTML (default RUN/report.html)")
    args = p.parse_args(argv)
    try:
        out = rebuild_report(args.run, args.out)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
