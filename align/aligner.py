"""`Aligner`: the stage-1 model of a run folder as a Python object, for any images.

    al = dvsa.Aligner.load("runs/demo")            # or an alignment checkpoint (RUN/align/model.pt)
    al.align("photo.jpg", "a dog runs on the grass")  # snippets: words, box, score (the MRF of eq. 12)
    al.score(["a.jpg", "b.jpg"], ["a dog", "a cat"])  # float [2 images, 2 sentences]: eq. 8
    al.picture("photo.jpg", ["a dog runs on the grass"]).save("fig.png")  # boxes, sentences, snippets drawn

Regions and CNN features of new images come from the encoder that made the checkpoint's training features
(`RegionEncoder.from_meta` on the checkpoint's feature-store meta), built once. The word-to-region assignment
is `align.snippets.score_pairs` + `align.mrf.chain_mrf` + `align.snippets.batch_snippets`, at the run's beta
(``RUN/snippets.done.json``, else ``RUN/results.json`` alignment.beta, else `SnippetConfig.beta` when set,
else 0 = the per-word argmax) and with the run's learned box score (``RUN/box_score.pt`` at the weight the
pipeline chose) where it has one. Scores are `align.retrieval.score_collection` (eq. 8, the checkpoint's score).
`search_bank` holds the run's bank of training sentences and the search beta its retrieval stage chose
(``RUN/retrieval.done.json``; `align.hubness`), which a photo index built with this aligner uses (`align.index`).

Images may be paths, PIL images, numpy arrays (H x W x 3 uint8) or bytes (`data.images.as_rgb`). Every fault is
a `DvsaError` (`CheckpointError` for a missing or foreign checkpoint, `ImageInputError` for a bad image).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch
from dvsa.align.boxscore import BoxPrior, load_box_scorer
from dvsa.align.draw import render_alignment
from dvsa.align.mrf import chain_mrf
from dvsa.align.regions.encoder import RegionEncoder
from dvsa.align.retrieval import embed_sentences, score_collection
from dvsa.align.snippets import SnippetConfig, batch_snippets, score_pairs
from dvsa.align.train import load_alignment
from dvsa.data.errors import CheckpointError, UsageError
from dvsa.data.images import MAX_PIXELS, as_rgb, image_name
from dvsa.data.memstore import MemoryStore
from dvsa.data.records import ImageRecord, Sentence
from dvsa.data.text import tokenize


def checkpoint_in(run_or_checkpoint, sub: str, what: str) -> Path:
    """RUN/<sub>/model.pt of a run folder, or the checkpoint file itself; CheckpointError when neither exists."""
    p = Path(run_or_checkpoint)
    if p.is_dir():
        ck = p / sub / "model.pt"
        if not ck.is_file():
            raise CheckpointError(f"{p}: no {what} in this run folder ({ck} is missing)")
        return ck
    if not p.is_file():
        raise CheckpointError(f"{p}: no such run folder or checkpoint")
    return p


def encoder_for(meta: dict, device: str = "cpu") -> RegionEncoder:
    """The region encoder of a feature-store meta, for new images. A store of given boxes has no box recipe for
    new images: those get the default R-CNN boxes (selective search) with the same CNN."""
    overrides = {"device": device, "progress": False, "workers": 0}
    if (meta.get("region_config") or {}).get("backend") == "given":
        overrides["backend"] = "rcnn"
    try:
        return RegionEncoder.from_meta(meta, **overrides)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


def _run_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_calibrated_beta(run: Path | None) -> tuple[float, str] | None:
    """(beta, the file holding it) that a run folder's snippets stage calibrated, or None when it has none."""
    if run is not None:
        snip = _run_json(run / "snippets.done.json").get("result", {})
        if "beta" in snip:
            return float(snip["beta"]), f"{run / 'snippets.done.json'}"
        res = _run_json(run / "results.json").get("alignment", {})
        if "beta" in res:
            return float(res["beta"]), f"{run / 'results.json'}"
    return None


def run_beta(run: Path | None) -> tuple[float, str]:
    """(beta, where it came from) of a run folder (module doc)."""
    found = run_calibrated_beta(run)
    if found is not None:
        return found
    if SnippetConfig.beta is not None:
        return float(SnippetConfig.beta), "SnippetConfig.beta"
    return 0.0, "no calibrated beta in the run: 0 (each word on its best region)"


def _retrieval_bank(run: Path | None) -> dict:
    """The "bank" of a run folder's retrieval stage result ({} when there is none)."""
    if run is None:
        return {}
    return _run_json(run / "retrieval.done.json").get("result", {}).get("bank") or {}


def run_bank(run: Path | None) -> tuple[list[str], tuple, int] | None:
    """(bank image ids, (annotation beta, search beta), sentences per bank image) of a run folder's retrieval
    stage when it corrected its scores with a bank of train images (`align.hubness`), else None."""
    bank = _retrieval_bank(run)
    if not bank.get("beta") or not bank.get("ids"):
        return None
    return list(bank["ids"]), tuple(bank["beta"]), int(bank.get("sentences_per_image", 1))


def run_search_bank(run: Path | None) -> tuple[list[str], float] | None:
    """(the bank's sentences as text, the search beta) of a run folder whose retrieval stage corrected image
    search with a bank of train sentences (`align.hubness`), else None (no bank, no search beta, or a run written
    before the stage kept the sentences)."""
    bank = _retrieval_bank(run)
    beta, texts = (bank.get("beta") or [None, None])[1], bank.get("texts")
    if beta is None or not texts:
        return None
    return [str(t) for t in texts], float(beta)


def run_box_scorer(run: Path | None):
    """(BoxScorer, weight) of a run folder's RUN/box_score.pt at the weight the pipeline chose, or (None, 0)."""
    if run is None or not (run / "box_score.pt").is_file():
        return None, 0.0
    done = _run_json(run / "box_score.done.json").get("result", {})
    try:
        scorer = load_box_scorer(run / "box_score.pt")
        if "weight" in done:
            weight = float(done["weight"])
        else:
            weight = float(torch.load(run / "box_score.pt", weights_only=True).get("stats", {}).get("weight", 0.0))
    except (ValueError, FileNotFoundError) as e:
        raise CheckpointError(str(e)) from None
    return (scorer, weight) if weight > 0 else (None, 0.0)


class Aligner:
    """An alignment model with its region encoder (module doc). Thread-safe: one lock around the model."""

    def __init__(self, model, vocab, cfg, encoder, beta: float = 0.0, box_scorer=None, box_weight: float = 0.0,
                 device: str = "cpu", checkpoint: str | None = None, max_pixels: int = MAX_PIXELS):
        self.model, self.vocab, self.cfg, self.encoder = model, vocab, cfg, encoder
        self.beta, self.device, self.checkpoint, self.max_pixels = float(beta), device, checkpoint, max_pixels
        self.box_weight = float(box_weight) if box_scorer is not None else 0.0
        self.aligned = BoxPrior(model, box_scorer.to(device), box_weight) if box_scorer is not None else model
        self.beta_source = ""
        self.search_bank: tuple[list[str], float] | None = None  # (bank sentences, search beta): `run_search_bank`
        self.lock = threading.RLock()

    @classmethod
    def load(cls, run_or_checkpoint, device: str = "cpu", beta: float | None = None, encoder=None) -> Aligner:
        """From a run folder (RUN/align/model.pt, its beta and box score) or an alignment checkpoint."""
        ck = checkpoint_in(run_or_checkpoint, "align", "alignment model")
        run = Path(run_or_checkpoint) if Path(run_or_checkpoint).is_dir() else None
        try:
            model, vocab, cfg = load_alignment(ck, device=device)
            meta = torch.load(ck, map_location="cpu", weights_only=True).get("features") or {}
        except (ValueError, FileNotFoundError) as e:
            raise CheckpointError(str(e)) from None
        enc = encoder if encoder is not None else encoder_for(meta, device)
        b, where = (float(beta), "given") if beta is not None else run_beta(run)
        scorer, weight = run_box_scorer(run)
        out = cls(model, vocab, cfg, enc, b, scorer, weight, device, str(ck))
        out.beta_source = where
        out.search_bank = run_search_bank(run)
        return out

    # ---------------------------------------------------------------------------------------------- regions
    def regions(self, images) -> MemoryStore:
        """A `MemoryStore` holding the regions of `images` under ids "0", "1", ... (in order)."""
        store = MemoryStore(int(self.model.feat_dim))
        for n, im in enumerate(images):
            pil = as_rgb(im, self.max_pixels, name=None if isinstance(im, (str, Path)) else image_name(im, n))
            with self.lock:
                boxes, feats, whole = self.encoder.encode(pil)
            store.add(str(n), boxes, feats, whole, pil.size)
        return store

    def _tokens(self, sentence: str) -> list[str]:
        if not isinstance(sentence, str):
            raise UsageError(f"a sentence must be a string, got {type(sentence).__name__}")
        tokens = tokenize(sentence)
        if not tokens:
            raise UsageError(f"the sentence {sentence!r} has no words")
        return tokens[: self.cfg.max_words] if getattr(self.cfg, "max_words", None) else tokens

    # -------------------------------------------------------------------------------------------- alignment
    def align(self, image, sentence: str, store: MemoryStore | None = None, image_id: str = "0") -> dict:
        """The sentence's words on the image's regions (the MRF at the run's beta):

        {"sentence", "tokens", "unknown" (words out of the vocabulary), "width", "height", "beta",
         "snippets": [{"words": str, "start", "end" (token span, end exclusive), "box": [x1, y1, x2, y2] px,
                       "region": int (0 = whole image), "score": float (sum of the words' v . s)}, ...]}
        """
        tokens = self._tokens(sentence)
        if store is None:
            store, image_id = self.regions([image]), "0"
        rec = ImageRecord(image_id, "", split="none", sentences=[])
        sent = Sentence(0, sentence, tokens)
        snips = []
        with self.lock:
            for batch in score_pairs(self.aligned, self.vocab, store, [(rec, sent)], batch_size=1, device=self.device):
                assign = chain_mrf(batch.unary, batch.lengths, batch.region_mask, self.beta).assign
                snips += [{"words": d["text"], "start": d["start"], "end": d["end"], "box": d["box"],
                           "region": d["region"], "score": d["score"]} for d in batch_snippets(batch, assign)]
        w, h = store.image_size(image_id)
        return {"sentence": sentence, "tokens": tokens, "unknown": [t for t in tokens if t not in self.vocab],
                "width": w, "height": h, "beta": self.beta, "snippets": snips}

    def picture(self, image, sentences, width: int = 448, show_scores: bool = True, title: str | None = None):
        """The alignment figure of one image (PIL RGB, `width` px wide): the image with the box of every region
        a snippet chose, tagged with its words, and each sentence below with its snippets coloured like their
        boxes (`align.draw.render_alignment`, as ``dvsa align show``). The regions are encoded once."""
        sentences = [sentences] if isinstance(sentences, str) else list(sentences)
        if not sentences:
            raise UsageError("picture() needs at least one sentence")
        pil = as_rgb(image, self.max_pixels, name=None if isinstance(image, (str, Path)) else image_name(image, 0))
        store = self.regions([pil])
        aligned = [self.align(pil, s, store=store) for s in sentences]
        return render_alignment(pil, [(a["tokens"], a["snippets"]) for a in aligned], pil.size, width,
                                show_scores, title=title)

    def score(self, images, sentences) -> np.ndarray:
        """Eq. 8 scores float32 [N images, M sentences] (the checkpoint's score kind and normalisation)."""
        images = [images] if _single(images) else list(images)
        sentences = [sentences] if isinstance(sentences, str) else list(sentences)
        if not images or not sentences:
            raise UsageError("score() needs at least one image and one sentence")
        tokens = [self.vocab.encode(self._tokens(s)) for s in sentences]
        store = self.regions(images)
        with self.lock:
            s = score_collection(self.model, store, store.ids, tokens, device=self.device)
        return s.numpy().astype(np.float32)

    # ------------------------------------------------------------------------------------- embeddings (Index)
    @torch.inference_mode()
    def embed_store(self, store, ids: list[str]) -> list[np.ndarray]:
        """Region embeddings float32 [R_i, H] of every image of a store (FeatureStore or MemoryStore)."""
        out = []
        with self.lock:
            for i in ids:
                boxes, feats = store.regions(i)
                v = self.model.embed_regions(torch.from_numpy(np.array(feats[None])).to(self.device),
                                             torch.from_numpy(np.array(boxes[None])).to(self.device)).float()[0]
                out.append(v.cpu().numpy())
        return out

    @torch.inference_mode()
    def embed_sentence(self, sentence: str) -> np.ndarray:
        """Word embeddings float32 [T, H] of one sentence (the BRNN of eqs. 2-6)."""
        ids = self.vocab.encode(self._tokens(sentence))
        with self.lock:
            words, _ = embed_sentences(self.model, [ids], device=self.device)
        return words.cpu().numpy()


def _single(images) -> bool:
    return isinstance(images, (str, Path, bytes, np.ndarray)) or hasattr(images, "getpixel")
