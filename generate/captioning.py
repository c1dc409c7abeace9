"""Full-frame captions of image files (``dvsa caption``): each image is encoded whole (no boxes) by the encoder
that made the generator's training features, then decoded in batches by `generate.decode.decode`."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from dvsa.align.regions.images import load_rgb
from dvsa.generate.decode import decode
from dvsa.generate.inputs import combine


def whole_frame_input(encoder, pil, mode: str) -> np.ndarray:
    """Whole-frame generator input float32 [Din] of one image: encode it with no boxes (row 0 only)."""
    _, regions, image = encoder.encode(pil, boxes=np.zeros((0, 4), np.float32))
    return combine(regions[:1], image, mode)[0]


def caption_images(model, vocab, gen_cfg, encoder, paths: list[Path], beam: int, max_len: int, length_norm: float,
                   batch: int, on_caption=None, log=None) -> tuple[list[dict], list[dict]]:
    """(captions, failed) of image files: captions [{"image_id": file stem, "path", "caption", "logprob"}], failed
    [{"path", "reason"}] for images that could not be read or encoded (each reported to `log`, default stderr,
    and skipped). `on_caption(path, text)` is called for every caption as it comes."""
    say = log or (lambda m: print(m, file=sys.stderr))
    results, failed = [], []
    for s in range(0, len(paths), batch):
        chunk, feats = [], []
        for path in paths[s : s + batch]:
            try:
                feats.append(whole_frame_input(encoder, load_rgb(str(path)), gen_cfg.input))
                chunk.append(path)
            except Exception as e:  # any unreadable image is reported and skipped; the rest goes on
                reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
                say(f"dvsa caption: skipping {path}: {reason}")
                failed.append({"path": str(path), "reason": reason})
        if not chunk:
            continue
        hyps = decode(model, np.stack(feats), "beam", beam, max_len, length_norm, gen_cfg.min_len)
        for path, (toks, lp) in zip(chunk, hyps):
            text = " ".join(vocab.decode(toks))
            results.append({"image_id": path.stem, "path": str(path), "caption": text, "logprob": float(lp)})
            if on_caption is not None:
                on_caption(path, text)
    return results, failed
