"""Reader for plain images to caption or describe (inference): a folder, one image file, or a list of files.

    records = load_dataset("folder", "my_photos/")             # every image in the folder (sorted)
    records = load_dataset("folder", ["a.jpg", "b.png"])        # these files, in this order

Records have split "none", no sentences, and width/height from the image header (PIL reads no pixels).
A file with an image extension that PIL cannot open is reported (one `DataWarning` naming the files) and
skipped (counted ``unreadable_image`` in `report`; ``strict=True`` raises instead); files with other extensions are ignored when scanning a folder. Ids are the path relative to the
folder without its extension (``sub/cat``), or the path with its extension where two files would share one.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from ..catalog import register
from ..records import DataError, ImageRecord
from .common import IMAGE_EXTENSIONS, abspath, image_size, warn
from .report import ReadReport, ensure, finish


def _ids(rels: list[str]) -> list[str]:
    stems = [os.path.splitext(r)[0] for r in rels]
    n = Counter(stems)
    return [s if n[s] == 1 else r for s, r in zip(stems, rels)]


@register("folder")
def read_folder(
    root: str | os.PathLike | list,
    recursive: bool = False,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    strict: bool = False,
    report: ReadReport | None = None,
) -> list[ImageRecord]:
    """Records for the images of a folder (`recursive` descends into sub-folders), one file, or a list of files."""
    report, owned = ensure(report, strict, "folder")
    if isinstance(root, (list, tuple)):
        files = [Path(p) for p in root]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise DataError(missing[0], f"image file not found ({len(missing)} of {len(files)} missing)")
        rels = [p.name for p in files]
        if len(set(rels)) < len(rels):  # same names in different folders: keep the paths as given
            rels = [str(p) for p in files]
    else:
        root = Path(root)
        if root.is_file():
            files, rels = [root], [root.name]
        elif root.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in extensions)
            rels = [p.relative_to(root).as_posix() for p in files]
            if not files:
                raise DataError(root, f"no image files ({', '.join(extensions)}) in this folder")
        else:
            raise DataError(root, "no such file or folder")

    records, bad = [], []
    for path, image_id in zip(files, _ids(rels)):
        try:
            w, h = image_size(path)
        except (OSError, ValueError) as e:
            report.add("unreadable_image", path, f"image {image_id}", f"unreadable image ({e.__class__.__name__})")
            bad.append((path, e))
            continue
        records.append(ImageRecord(id=image_id, path=abspath(path), width=w, height=h, split="none"))
    if bad:
        shown = ", ".join(f"{p} ({e.__class__.__name__})" for p, e in bad[:5])
        warn(bad[0][0], f"unreadable image skipped ({len(bad)} in all: {shown})")
    finish(report, owned, len(records))
    return records
