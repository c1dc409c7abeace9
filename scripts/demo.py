"""``dvsa demo --out runs/demo``: the whole pipeline on freshly generated synthetic scenes, on the CPU, in minutes.

Writes the scenes (`data.synthetic.write_synthetic`, its defaults) into OUT/data, runs `dvsa pipeline` on them
with the offline backbone (selective search + EfficientNet-Lite0, backend "rcnn") and the small stage sizes of
`DemoConfig` (`generate.pipeline.demo`), and prints where the report is. Run it again and every finished stage
is reused.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dvsa.generate.pipeline import DemoConfig, PipelineConfig, run_demo
from dvsa.generate.pipeline.demo import demo_set_targets
from dvsa.scripts._args import add_device_arg, add_set_arg, parser
from dvsa.scripts.pipeline import run_stages


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa demo", __doc__)
    p.add_argument("--out", default="runs/demo", help="run folder (data, every stage's outputs, report.html)")
    add_device_arg(p, PipelineConfig.device)
    add_set_arg(p, demo_set_targets(), "synthetic.n_train=60 --set align.epochs=5 (synthetic: write_synthetic's "
                                       "SynthConfig; the rest as in dvsa pipeline)")
    args = p.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    results, data_s = run_stages(run_demo, DemoConfig(), out, args.device, args.set_items)
    total = time.perf_counter() - t0
    print(f"demo finished in {total:.0f} s (data {data_s:.0f} s)")
    for key in ("retrieval", "captioning", "alignment"):
        if key in results:
            print(f"  {key}: {json.dumps(results[key])}")
    print(f"results: {out / 'results.json'}")
    print(f"report:  {(out / 'report.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
