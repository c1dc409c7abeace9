"""``dvsa report RUN_DIR``: rebuild the self-contained HTML report of a pipeline run folder
(`generate.pipeline.report`)."""
from __future__ import annotations

import sys

from dvsa.generate.pipeline import rebuild_report
from dvsa.scripts._args import parser


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa report", "rebuild report.html of a pipeline run folder")
    p.add_argument("run", help="the pipeline's --out folder (holds results.json)")
    p.add_argument("--out", default=None, help="where to write the HTML (default RUN/report.html)")
    args = p.parse_args(argv)
    out = rebuild_report(args.run, args.out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
