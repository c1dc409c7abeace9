"""Full-frame captions of image files (``dvsa caption``): each image is encoded whole (no boxes) by the encoder
that made the generator's training features, then decoded in batches by beam search (`generate.decode`); the
command writes them with `generate.formats.to_coco_results` (COCO results format).

The attention generator (``GenConfig.arch = "attention"``) needs the image's regions: the encoder detects and
encodes them (`region_set_input`, row 0 the whole image), the beam search returns each word's attention weights
over them (`word_attention`), and `draw_attention` draws every word on its most-attended region
(`align.draw.render_alignment`, one region colour per row)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from dvsa.align.draw import render_alignment
from dvsa.align.regions.images import load_rgb
from dvsa.data.io import atomic_write_with
from dvsa.data.progress import progress as progress_bar
from dvsa.generate import consensus
from dvsa.generate.decode import beam_search, greedy
from dvsa.generate.formats import coco_image_id
from dvsa.generate.inputs import combine, pad_sets


def whole_frame_input(encoder, pil, mode: str) -> np.ndarray:
    """Whole-frame generator input float32 [Din] of one image: encode it with no boxes (row 0 only)."""
    _, regions, image = encoder.encode(pil, boxes=np.zeros((0, 4), np.float32))
    return combine(regions[:1], image, mode)[0]


def region_set_input(encoder, pil) -> tuple[np.ndarray, np.ndarray]:
    """The attention generator's input of one image: (boxes float32 [N, 4] xyxy pixels, feats float32 [N, D]),
    the encoder's detected regions with row 0 the whole image."""
    boxes, regions, _ = encoder.encode(pil)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(regions, np.float32)


def word_attention(words: list[str], alphas, boxes: np.ndarray) -> list[dict]:
    """Per caption word {"word", "row" (most-attended region row), "box" [x1, y1, x2, y2] of that row, "weight"
    (its attention weight), "weights" (over the image's N regions)}; alphas float [L >= len(words), N'] (N' >= N:
    columns past N are padding, END's row is dropped)."""
    a = np.asarray(alphas, np.float64)[: len(words), : len(boxes)]
    out = []
    for w, row in zip(words, a):
        r = int(row.argmax())
        out.append({"word": w, "row": r, "box": [float(v) for v in boxes[r]], "weight": float(row[r]),
                    "weights": [round(float(v), 6) for v in row]})
    return out


def draw_attention(pil, caption: str, attention: list[dict], width: int = 448):
    """PIL picture: the image with the box of every word's most-attended region, the caption below with each word
    in the colour of its region followed by the weight (`align.draw.render_alignment`)."""
    words = [a["word"] for a in attention]
    snips = [{"start": t, "end": t + 1, "region": a["row"], "box": a["box"], "score": a["weight"]}
             for t, a in enumerate(attention)]
    return render_alignment(pil, [(words, snips)], orig_size=pil.size, width=width, title=caption or "(empty)")


def caption_images(model, vocab, gen_cfg, encoder, paths: list[Path], beam: int, max_len: int, length_norm: float,
                   batch: int, on_caption=None, log=None, progress: bool = True,
                   attention_dir: str | Path | None = None, bank=None) -> tuple[list[dict], list[dict]]:
    """(captions, failed) of image files, in the order of `paths`.

    captions: [{"image_id": `formats.coco_image_id(path)` (the COCO id of a COCO file name, else the file name
    without extension), "caption": str, "file_name", "path", "logprob" (natural log, END included), "score"
    (logprob per word, END counted), "candidates": [{"caption", "logprob"}, ...] (the beam's finished
    hypotheses, best first)}]. An image whose id another image already has gets its path as its id (two files
    "a.jpg" and "a.png"); a file given twice is captioned once. failed: [{"path", "reason"}] for images that
    could not be read or encoded (each reported to `log`, default stderr, and skipped). `on_caption(path, text)`
    is called for every caption as it comes. `progress`: a bar over the images (`dvsa.data.progress`).
    An attention generator's captions also carry "attention" (`word_attention`) and "boxes" (its regions); with
    `attention_dir` each image's `draw_attention` picture is written there as ``<n>_<file stem>.png``.
    With a `generate.consensus.CaptionBank` as `bank` (a full-frame generator, `gen_cfg.consensus_k` > 0, beam
    > 1) the caption is the consensus choice among the candidates (its "consensus" field: the candidate's index).
    """
    say = log or (lambda m: print(m, file=sys.stderr))
    sets = gen_cfg.input == "regions"
    if attention_dir is not None and not sets:
        raise ValueError("attention pictures need an attention generator (GenConfig.arch='attention')")
    if attention_dir is not None:
        Path(attention_dir).mkdir(parents=True, exist_ok=True)
    results, failed, ids, seen = [], [], set(), set()
    bar = progress_bar(total=len(paths), desc="captions", unit="img", enabled=progress)
    for s in range(0, len(paths), batch):
        chunk, feats, boxes, pils = [], [], [], []
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
                pil = load_rgb(str(path))
                if sets:
                    b, f = region_set_input(encoder, pil)
                    boxes.append(b)
                    pils.append(pil if attention_dir is not None else None)
                else:
                    f = whole_frame_input(encoder, pil, gen_cfg.input)
                feats.append(f)
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
        x, mask = pad_sets(feats) if sets else (np.stack(feats), None)  # [b, N, D] + [b, N], or [b, Din]
        if beam == 1:  # beam search with one beam is greedy decoding (generate.decode)
            hyps = [[h] for h in greedy(model, x, max_len, gen_cfg.min_len, mask, attention=sets)]
        else:
            hyps = beam_search(model, x, beam, max_len, length_norm, gen_cfg.min_len, mask, attention=sets)
        rerank = consensus.reranks(bank, gen_cfg, beam)
        pick = consensus.pick(bank, vocab, x, hyps, gen_cfg) if rerank else [0] * len(hyps)
        for n, ((iid, path), cands) in enumerate(zip(chunk, hyps)):
            toks, lp = cands[pick[n]][:2]
            words = vocab.decode(toks)
            text = " ".join(words)
            res = {"image_id": iid, "caption": text, "file_name": path.name, "path": str(path),
                   "logprob": float(lp), "score": float(lp) / (len(toks) + 1),
                   "candidates": [{"caption": " ".join(vocab.decode(c[0])), "logprob": float(c[1])} for c in cands]}
            if rerank:
                res["consensus"] = pick[n]
            if sets:
                res["attention"] = word_attention(words, cands[0][2], boxes[n])
                res["boxes"] = boxes[n].tolist()
                if attention_dir is not None:
                    pic = draw_attention(pils[n], text, res["attention"])
                    atomic_write_with(Path(attention_dir) / f"{len(results)}_{path.stem}.png",
                                      lambda f, pic=pic: pic.save(f, format="PNG"))
            results.append(res)
            if on_caption is not None:
                on_caption(path, text)
    bar.close()
    return results, failed
