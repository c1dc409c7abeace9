"""Full-frame captions of image files (``dvsa caption``): each image is encoded whole (no boxes) by the encoder
that made the generator's training features, then decoded in batches by beam search (`generate.decode`); the
command writes them with `generate.formats.to_coco_results` (COCO results format)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from dvsa.align.regions.images import load_rgb
from dvsa.data.progress import progress as progress_bar
from dvsa.generate.decode import beam_search, greedy
from dvsa.generate.formats import coco_image_id
from dvsa.generate.inputs import combine


def whole_frame_input(encoder, pil, mode: str) -> np.ndarray:
    """Whole-frame generator input float32 [Din] of one image: encode it with no boxes (row 0 only)."""
    _, regions, image = encoder.encode(pil, boxes=np.zeros((0, 4), np.float32))
    return combine(regions[:1], image, mode)[0]


def caption_images(model, vocab, gen_cfg, encoder, paths: list[Path], beam: int, max_len: int, length_norm: float,
                   batch: int, on_caption=None, log=None, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """(captions, failed) of image files, in the order of `paths`.

    captions: [{"image_id": `formats.coco_image_id(path)` (the COCO id of a COCO file name, else the file name
    without extension), "caption": str, "file_name", "path", "logprob" (natural log, END included), "score"
    (logprob per word, END counted), "candidates": [{"caption", "logprob"}, ...] (the beam's finished
    hypotheses, best first)}]. An image whose id another image already has gets its path as its id (two files
    "a.jpg" and "a.png"); a file given twice is captioned once. failed: [{"path", "reason"}] for images that
    could not be read or encoded (each reported to `log`, default stderr, and skipped). `on_caption(path, text)`
    is called for every caption as it comes. `progress`: a bar over the images (`dvsa.data.progress`).
    """
    say = log or (lambda m: print(m, file=sys.stderr))
    results, failed, ids, seen = [], [], set(), set()
    bar = progress_bar(total=len(paths), desc="captions", unit="img", enabled=progress)
    for s in range(0, len(paths), batch):
        chunk, feats = [], []
        for path in paths[s : s + batch]:
            bar.update(1)
            path = Path(path)
            iid = coco_image_id(path)
            if str(path) in seen:
                say(f"dvsa caption: {path} is listed twice; captioned once")
                continue
            if iid in ids:
                say(f"dvsa caption: {path}: image id {iid!r} is taken by another image; its id is its path")
                iid = str(path)
            try:
                feats.append(whole_frame_input(encoder, load_rgb(str(path)), gen_cfg.input))
            except Exception as e:  # any unreadable image is reported and skipped; the rest goes on
                reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
                say(f"dvsa caption: skipping {path}: {reason}")
                failed.append({"path": str(path), "reason": reason})
                continue
            ids.add(iid)
            seen.add(str(path))
            chunk.append((iid, path))
        if not chunk:
            continue
        x = np.stack(feats)
        if beam == 1:  # beam search with one beam is greedy decoding (generate.decode)
            hyps = [[h] for h in greedy(model, x, max_len, gen_cfg.min_len)]
        else:
            hyps = beam_search(model, x, beam, max_len, length_norm, gen_cfg.min_len)
        for (iid, path), cands in zip(chunk, hyps):
            toks, lp = cands[0]
            text = " ".join(vocab.decode(toks))
            results.append({"image_id": iid, "caption": text, "file_name": path.name, "path": str(path),
                            "logprob": float(lp), "score": float(lp) / (len(toks) + 1),
                            "candidates": [{"caption": " ".join(vocab.decode(t)), "logprob": float(p)}
                                           for t, p in cands]})
            if on_caption is not None:
                on_caption(path, text)
    bar.close()
    return results, failed
