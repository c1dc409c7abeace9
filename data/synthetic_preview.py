"""A contact sheet of synthetic scenes (``dvsa synth --preview N``): the first images with their object boxes
(white: never mentioned) and their first sentence."""
from __future__ import annotations

import json
from pathlib import Path

from dvsa.data.synthetic import DATASET_JSON, GROUNDTRUTH_JSON, IMAGE_DIR
from PIL import Image, ImageDraw


def contact_sheet(root: str | Path, n: int, path: str | Path, cols: int = 4) -> Path:
    """A PNG grid of the first `n` images of the dataset at `root` with boxes and their first sentence."""
    root = Path(root)
    gt = json.loads((root / GROUNDTRUTH_JSON).read_text(encoding="utf-8"))
    ds = json.loads((root / DATASET_JSON).read_text(encoding="utf-8"))
    first = {Path(e["filename"]).stem: e["sentences"][0]["raw"] for e in ds["images"]}
    ids = list(gt["images"])[:n]
    side, text_h = gt["config"]["size"], 14
    rows = max(1, (len(ids) + cols - 1) // cols)
    sheet = Image.new("RGB", (cols * side, rows * (side + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, image_id in enumerate(ids):
        x, y = (k % cols) * side, (k // cols) * (side + text_h)
        with Image.open(root / IMAGE_DIR / f"{image_id}.png") as im:
            sheet.paste(im.convert("RGB"), (x, y))
        for o in gt["images"][image_id]["objects"]:
            x1, y1, x2, y2 = o["box"]
            draw.rectangle([x + x1, y + y1, x + x2 - 1, y + y2 - 1], outline="black" if o["mentioned"] else "white")
        draw.text((x + 2, y + side + 1), first[image_id][: side // 6], fill="black")
    sheet.save(path)
    return Path(path)
