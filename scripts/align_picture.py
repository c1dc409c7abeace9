"""``dvsa align picture``: the words of your sentences on the regions of your own photos.

    dvsa align picture --checkpoint runs/f8k --images photo.jpg --sentence "a dog runs on the grass" --out fig.png
    dvsa align picture --checkpoint runs/f8k --images photos/ --sentence "a man" --sentence "a red shirt" --out figs/

Each image's regions are encoded by the encoder that made the run's training features; each sentence is aligned
by the MRF at the run's beta and box score (`dvsa.Aligner`), and the figure is drawn as ``dvsa align show``
draws it (`Aligner.picture`). With one image and an ``--out`` ending in .png or .jpg the figure is that file;
otherwise ``--out`` is a folder with ``<image name>.png`` per image. A corrupt or unreadable image is reported on
stderr and skipped. Exit status 0 when at least one figure was written, 1 when none was or the checkpoint is
missing or bad, 2 for bad arguments.
"""
from __future__ import annotations

import sys
from pathlib import Path

from dvsa.align.aligner import Aligner
from dvsa.data.errors import UsageError
from dvsa.data.images import ImageInputError
from dvsa.data.io import atomic_write_with, check_writable
from dvsa.generate.dense import image_files
from dvsa.scripts._args import add_checkpoint_arg, add_device_arg, add_images_arg, nonneg_float, parser, positive_int

FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg")


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa align picture", __doc__)
    add_checkpoint_arg(p, "align", help="alignment checkpoint (dvsa align train); a run folder also gives its beta "
                                         "and box score")
    add_images_arg(p)
    p.add_argument("--sentence", action="append", required=True, help="a sentence to align (repeatable)")
    p.add_argument("--beta", type=nonneg_float, default=None, help="beta of eq. 12 (default: the run's)")
    p.add_argument("--width", type=positive_int, default=448, help="figure width in pixels")
    p.add_argument("--no-scores", action="store_true", help="leave the snippet scores out of the figure")
    add_device_arg(p)
    p.add_argument("--out", required=True, help="a .png / .jpg file (one image) or a folder")
    args = p.parse_args(argv)

    paths = image_files(args.images)
    if not paths:
        raise UsageError(f"no images in {' '.join(args.images)}")
    single = len(paths) == 1 and Path(args.out).suffix.lower() in FIGURE_SUFFIXES
    if not single and Path(args.out).suffix.lower() in FIGURE_SUFFIXES:
        raise UsageError(f"--out {args.out}: {len(paths)} images need an output folder, not one file")
    out = Path(args.out)
    check_writable(out, kind="file" if single else "dir")
    al = Aligner.load(args.checkpoint, device=args.device, beta=args.beta)
    print(f"beta {al.beta:.4g} ({al.beta_source}), box score weight {al.box_weight:g}", file=sys.stderr)
    written = 0
    for path in paths:
        try:
            fig = al.picture(path, args.sentence, width=args.width, show_scores=not args.no_scores)
        except ImageInputError as e:
            print(f"skipped: {e}", file=sys.stderr)
            continue
        target = out if single else out / f"{path.stem}.png"
        fmt = "JPEG" if target.suffix.lower() in (".jpg", ".jpeg") else "PNG"
        atomic_write_with(target, lambda f, fig=fig, fmt=fmt: fig.save(f, format=fmt, **({"quality": 88} if fmt == "JPEG" else {"optimize": True})))
        written += 1
        if not args.quiet:
            print(target)
    if not written:
        print("dvsa align picture: no image could be read", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
