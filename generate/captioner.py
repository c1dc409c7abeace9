"""`Captioner`: the generators of a run folder as a Python object, for any images.

    cap = dvsa.Captioner.load("runs/demo")          # or a generator checkpoint (RUN/gen_full/model.pt)
    cap.caption(["photo.jpg"])                       # [{"caption": "a dog runs on the grass", "score", "logprob"}]
    cap.caption(["photo.jpg"], temperature=0.8)      # sampled instead of beam search
    cap.dense(["photo.jpg"])                         # region boxes with captions and scores

A run folder gives RUN/gen_full/model.pt (full-frame captions) and, where present, RUN/gen_region/model.pt (dense
captions; else the full-frame model captions each region's crop, `DenseConfig.full_frame_input`) and
RUN/box_score.pt (joins the dense score, as in `generate.dense`). The region encoder is rebuilt once from the
checkpoint's feature-store meta (`RegionEncoder.from_meta`; one per distinct meta). Captions are decoded by
`generate.decode.decode` on the whole-frame input of `generate.captioning.whole_frame_input`; dense captions are
`generate.dense.dense_captions` on the regions of an in-memory store. A full-frame model's beam is re-ranked by the
caption bank beside its checkpoint (`generate.consensus`), as in `dvsa caption`.

An attention generator checkpoint (``GenConfig.arch = "attention"``; RUN/gen_attention/model.pt of a pipeline
run, loaded by path) captions from the image's detected regions, and every caption then carries "attention":
per word {"word", "row", "box", "weight", "weights"} (`generate.captioning.word_attention`) and "boxes".

Images may be paths, PIL images, numpy arrays (H x W x 3 uint8) or bytes (`data.images.as_rgb`); every fault is
a `DvsaError` (`CheckpointError`, `ImageInputError`, `UsageError`).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch
from dvsa.align.aligner import checkpoint_in, encoder_for, run_box_scorer
from dvsa.data.errors import CheckpointError, UsageError
from dvsa.data.images import MAX_PIXELS, as_rgb, image_name
from dvsa.data.memstore import MemoryStore
from dvsa.generate import consensus
from dvsa.generate.captioning import region_set_input, whole_frame_input, word_attention
from dvsa.generate.decode import beam_search, decode
from dvsa.generate.dense import dense_captions
from dvsa.generate.inputs import pad_sets
from dvsa.generate.train import load_generator


def _load(path, device):
    try:
        return load_generator(path, device=device)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise CheckpointError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None


class Captioner:
    """Full-frame and dense captions of images (module doc). Thread-safe: one lock around the models."""

    def __init__(self, full, region=None, encoders=None, box_scorer=None, box_weight: float = 1.0,
                 device: str = "cpu", max_pixels: int = MAX_PIXELS, checkpoints: dict | None = None, bank=None):
        """full, region: (model, vocab, cfg, ck) of `load_generator` (region None = use the full-frame model);
        encoders: {"full": encoder, "region": encoder}; bank: the full-frame model's `generate.consensus`
        caption bank (None: its beam's best caption as it is)."""
        self.bank = bank
        self.full, self.region = full, region
        self.encoders = encoders or {}
        self.box_scorer, self.box_weight = box_scorer, float(box_weight)
        self.device, self.max_pixels = device, max_pixels
        self.checkpoints = checkpoints or {}
        self.lock = threading.RLock()

    @classmethod
    def load(cls, run_or_checkpoint, device: str = "cpu", encoder=None) -> Captioner:
        """From a run folder (module doc) or one generator checkpoint (used for both kinds of caption).
        `encoder` replaces the rebuilt region encoder (tests)."""
        p = Path(run_or_checkpoint)
        run = p if p.is_dir() else None
        if run is not None and not (run / "gen_full" / "model.pt").is_file() and (run / "gen_region" / "model.pt").is_file():
            full_ck = run / "gen_region" / "model.pt"
        else:
            full_ck = checkpoint_in(p, "gen_full", "full-frame generator")
        full = _load(full_ck, device)
        region_ck = run / "gen_region" / "model.pt" if run is not None else None
        region = _load(region_ck, device) if region_ck is not None and region_ck.is_file() else None
        cache: dict[str, object] = {}

        def enc(ck):
            if encoder is not None:
                return encoder
            meta = ck.get("features") or {}
            key = json.dumps(meta, sort_keys=True, default=str)
            if key not in cache:
                cache[key] = encoder_for(meta, device)
            return cache[key]

        encoders = {"full": enc(full[3])}
        encoders["region"] = enc(region[3]) if region is not None else encoders["full"]
        scorer, weight = run_box_scorer(run)
        cks = {"full": str(full_ck), "region": str(region_ck) if region is not None else str(full_ck)}
        return cls(full, region, encoders, scorer, weight if scorer is not None else 1.0, device,
                   checkpoints=cks, bank=consensus.bank_for(full_ck, full[2], full[0].input_dim))

    def _images(self, images) -> tuple[list, bool]:
        single = isinstance(images, (str, Path, bytes, np.ndarray)) or hasattr(images, "getpixel")
        items = [images] if single else list(images)
        return [as_rgb(im, self.max_pixels, name=None if isinstance(im, (str, Path)) else image_name(im, n))
                for n, im in enumerate(items)], single

    # ---------------------------------------------------------------------------------------------- captions
    def caption(self, images, beam: int | None = None, temperature: float = 0.0, max_len: int | None = None,
                seed: int | None = None):
        """Full-frame captions: a list of {"caption", "score" (mean log-probability per word, END included),
        "logprob", "method"} (one dict for a single image), with "attention" and "boxes" for an attention generator
        (module doc). temperature > 0 samples (`seed` makes it repeatable) instead of the beam search of `beam`
        (default: the checkpoint's GenConfig.beam)."""
        model, vocab, cfg, _ = self.full
        if temperature is None or temperature < 0:
            raise UsageError(f"temperature must be >= 0, got {temperature}")
        beam = int(beam if beam is not None else cfg.beam)
        if beam < 1:
            raise UsageError(f"beam must be >= 1, got {beam}")
        max_len = int(max_len if max_len is not None else cfg.max_len)
        pils, single = self._images(images)
        out = []
        sets = cfg.input == "regions"  # the attention generator
        with self.lock:
            if sets:
                boxes, regions = zip(*(region_set_input(self.encoders["full"], pil) for pil in pils))
                feats, mask = pad_sets(regions)  # [B, N, D], [B, N]
            else:
                feats = np.stack([whole_frame_input(self.encoders["full"], pil, cfg.input) for pil in pils])
                mask = None
            if temperature > 0:
                gen = torch.Generator().manual_seed(seed) if seed is not None else None
                hyps = decode(model, feats, "sample", max_len=max_len, min_len=cfg.min_len, mask=mask,
                              attention=sets, temperature=float(temperature), generator=gen)
                method = f"sample (temperature {temperature:g})"
            elif consensus.reranks(self.bank, cfg, beam):
                cands = beam_search(model, feats, beam, max_len, cfg.length_norm, cfg.min_len)
                hyps = [h[i] for h, i in zip(cands, consensus.pick(self.bank, vocab, feats, cands, cfg))]
                method = f"beam {beam}, consensus of {cfg.consensus_k} neighbours"
            else:
                hyps = decode(model, feats, "beam", beam, max_len, cfg.length_norm, cfg.min_len, mask=mask,
                              attention=sets)
                method = f"beam {beam}"
        for n, h in enumerate(hyps):
            toks, lp = h[0], h[1]
            words = vocab.decode(toks)
            out.append({"caption": " ".join(words), "score": float(lp) / (len(words) + 1), "logprob": float(lp),
                        "method": method})
            if sets:
                out[-1]["attention"] = word_attention(words, h[2], boxes[n])
                out[-1]["boxes"] = boxes[n].tolist()
        return out[0] if single else out

    def dense(self, images, top: int | None = None, beam: int | None = None, **overrides):
        """Dense captions: per image {"width", "height", "regions": [{"box": [x1, y1, x2, y2] px, "caption",
        "score", "logprob", "row"}, ...] best first} (one dict for a single image). `top`, `beam` and other
        `generate.dense.DenseConfig` fields as keywords."""
        model, vocab, cfg, _ = self.region or self.full
        if cfg.arch == "attention":
            raise UsageError("dense captions need a region generator (RUN/gen_region); this one is an attention "
                             "generator, which captions whole images")
        if top is not None:
            overrides["top"] = int(top)
        if beam is not None:
            overrides["beam"] = int(beam)
        if self.box_scorer is not None:
            overrides.setdefault("box_weight", self.box_weight)
        pils, single = self._images(images)
        enc = self.encoders["region"]
        with self.lock:
            encoded = [enc.encode(pil) for pil in pils]
            store = MemoryStore(encoded[0][1].shape[1])
            for n, (pil, (boxes, feats, whole)) in enumerate(zip(pils, encoded)):
                store.add(str(n), boxes, feats, whole, pil.size)
            try:
                res = dense_captions(model, vocab, cfg, store, store.ids, box_scorer=self.box_scorer,
                                     log=lambda m: None, **overrides)
            except (TypeError, ValueError) as e:
                raise UsageError(f"dense captions: {e}") from None
        for r in res:
            r.pop("path", None)
            r.pop("image_id", None)
        return res[0] if single else res
