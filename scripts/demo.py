"""``dvsa demo --out runs/demo``: the whole pipeline on freshly generated synthetic scenes, on the CPU, in minutes.

Writes the scenes (`data.synthetic.write_synthetic`, its defaults) into OUT/data, runs `dvsa pipeline` on them
with the offline backbone (selective search + EfficientNet-Lite0, backend "rcnn") and the small stage sizes of
`DemoConfig` (`generate.pipeline.demo`), and prints where the report is. Run it again and every finished stage
is reused.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dvsa.generate.pipeline import DemoConfig, PipelineConfig, parse_value, run_demo
from dvsa.scripts.pipeline import run_or_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dvsa demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo", help="run folder (data, every stage's outputs, report.html)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=PipelineConfig.device)
    p.add_argument("--synthetic", nargs="*", default=[], metavar="KEY=VALUE",
                   help="write_synthetic arguments, e.g. n_train=60 n_test=20")
    p.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="pipeline overrides (dvsa pipeline)")
    args = p.parse_args(argv)
    out = Path(args.out)
    demo = DemoConfig()
    for item in args.synthetic:
        key, _, text = item.partition("=")
        demo.synthetic[key] = parse_value(text)
    t0 = time.perf_counter()
    code, ran = run_or_report("dvsa demo", run_demo, demo, out, args.device, args.config)
    if code:
        return code
    results, data_s = ran
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
