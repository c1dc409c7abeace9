"""Search over a photo collection at scale: `Index` (photos in, sentence queries out) on `VectorIndex`
(arrays in, FAISS candidates + exact eq. 8 rerank out).

    idx = dvsa.Index.build(aligner, ["a.jpg", "b.jpg", ...], path="runs/mine_index")  # resumable when path given
    idx.save("runs/mine_index"); idx = dvsa.Index.load("runs/mine_index")
    idx.search("a dog runs on the beach", k=10)  # [{"rank", "image_id", "path", "score"}, ...]

Each photo's regions are encoded once (a feature store under PATH/features: an interrupted build resumes
where it stopped) and embedded by the alignment model (eq. 1): region embeddings v_i float [R_i, H].

Candidates. Eq. 8 is S = sum_t max_i v_i . s_t, so every region embedding goes into FAISS (`IndexFlatIP`; IVF
above `ivf_threshold` regions) and each word s_t of the query fetches its `m` best regions (m = `fetch` x
`candidates`: fetching is cheap, exact scoring is not).
For a photo p, U_p = sum_t (its best fetched dot for word t, else the word's m-th best dot) is an upper bound
of its eq. 8 score (a region not fetched for t scores at most that m-th dot) — Fagin's threshold algorithm.
The `candidates` photos with the highest bound are scored exactly with eq. 8
(`align.scores.image_sentence_scores_packed`, the checkpoint's score kind and normalisation) and the best `k`
returned; when the k-th exact score is at least every unscored photo's bound, the answer is provably the
exhaustive one (`last_exact` says so); when it is not, the search fetches and reranks 4x more, up to
`max_rerank` of the photos. Above `ivf_threshold` regions FAISS's IVF makes the fetch approximate, and with it
the bound (nothing is then proven).

Hubs. A photo that scores high with almost any sentence takes the first rank from the right one; the pipeline's
retrieval stage corrects its search scores by a bank of training sentences (`align.hubness`: the inverted
softmax). A photo's correction, (1/beta) log sum_b exp(beta s(photo, b)) over the bank's sentences, depends on the
photo alone, so it is computed once when the index is built (`penalty` float64 [N], `VectorIndex.bank_penalty`)
and subtracted from the photo's score; the bound of a photo loses its own correction and stays a bound, so the
proof above holds for the corrected ranking. `Index.build` and `search_recall` do this (`correct_for_hubs`) when
the aligner comes from a run folder whose retrieval stage chose a search beta (`Aligner.search_bank`).

One pooled vector per photo (the mean of its regions, tried first) is a lower bound that dilutes the one region
a word matches: on 3,000 synthetic photos it kept the exhaustive top 10 for 16% of the queries, against 100% for
the region candidates (tests/test_index.py).

Files of a saved index: index.json (format, checkpoint, ids, paths, score kind and norm, "hubness": the bank's
beta and size or null), regions.npy float32 [sum R_i, H], offsets.npy int64 [N + 1], penalty.npy float64 [N] (with
a bank only), and features/ (the feature store). Dimensions: N photos, R regions,
H embedding size, T words.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from dvsa.align import hubness
from dvsa.align.aligner import Aligner
from dvsa.align.scores import image_sentence_scores_packed
from dvsa.data.errors import CheckpointError, DataError, UsageError
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.images import ImageInputError, as_rgb
from dvsa.data.io import atomic_save_npy, atomic_write_json
from dvsa.data.memstore import MemoryStore
from dvsa.data.progress import progress
from dvsa.generate.dense import image_files

FORMAT = 1


class VectorIndex:
    """Photos as region embeddings (regions float32 [sum R_i, H], offsets int64 [N + 1]): pooled-vector
    candidates (FAISS) reranked exactly with eq. 8 (module doc)."""

    def __init__(self, regions: np.ndarray, offsets: np.ndarray, kind: str = "max", norm: str = "none",
                 ivf_threshold: int = 5_000_000, nprobe: int = 32, use_faiss: bool = True, fetch: int = 4,
                 max_rerank: float = 0.1, penalty: np.ndarray | None = None):
        self.regions = np.ascontiguousarray(regions, np.float32)
        self.offsets = np.asarray(offsets, np.int64)
        if self.offsets.ndim != 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.regions) or \
                np.any(np.diff(self.offsets) < 1):
            raise ValueError("offsets must rise from 0 to the number of region rows, every photo >= 1 region")
        self.kind, self.norm = kind, norm
        self.fetch = int(fetch)  # regions fetched per query word = fetch x the photos reranked
        self.max_rerank = float(max_rerank)  # an unproven answer widens its candidates up to this share of photos
        self.n = len(self.offsets) - 1
        self.dim = self.regions.shape[1]
        counts = np.diff(self.offsets)
        self.owner = np.repeat(np.arange(self.n, dtype=np.int64), counts)  # [sum R_i] photo of each region row
        self.max_regions = int(counts.max())
        # float64 [N] subtracted from each photo's score (the bank correction, module doc); None: eq. 8 as it is
        self.penalty = None if penalty is None else np.asarray(penalty, np.float64).reshape(-1)
        if self.penalty is not None and len(self.penalty) != self.n:
            raise ValueError(f"penalty must have one value per photo ({self.n}), got {len(self.penalty)}")
        self.backend = "numpy"
        self.faiss = None
        self.last_exact = False  # whether the latest search() provably equals the exhaustive top k
        if use_faiss:
            self._build_faiss(ivf_threshold, nprobe)

    def _build_faiss(self, ivf_threshold: int, nprobe: int) -> None:
        try:
            import faiss  # optional heavy dependency: without it, candidates come from one numpy product
        except ImportError:
            return
        n_rows = len(self.regions)
        if n_rows >= ivf_threshold:
            nlist = int(4 * np.sqrt(n_rows))
            quant = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quant, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            index.train(self.regions[rng.choice(n_rows, min(n_rows, 64 * nlist), replace=False)])
            index.add(self.regions)
            index.nprobe = min(nprobe, nlist)
            self.backend = f"faiss IVFFlat over regions (nlist {nlist}, nprobe {index.nprobe})"
        else:
            index = faiss.IndexFlatIP(self.dim)
            index.add(self.regions)
            self.backend = "faiss IndexFlatIP over regions"
        self.faiss = index

    @property
    def exact_fetch(self) -> bool:
        """Whether each word's fetched regions are exactly its best (flat search), so the bound holds."""
        return self.faiss is None or "IVF" not in self.backend

    def _top_regions(self, words: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
        """(dots float32 [T, m] best first, region rows int64 [T, m]) of each word's m best regions."""
        q = np.ascontiguousarray(words, np.float32)
        if self.faiss is not None:
            d, i = self.faiss.search(q, m)
            return d, i
        s = q @ self.regions.T  # [T, sum R]
        top = np.argpartition(-s, m - 1, axis=1)[:, :m]
        d = np.take_along_axis(s, top, 1)
        order = np.argsort(-d, axis=1, kind="stable")
        return np.take_along_axis(d, order, 1), np.take_along_axis(top, order, 1)

    def candidates(self, words: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray, float]:
        """(photo indices int64 [<= c] by decreasing bound, their upper bounds, the bound of every photo not among
        them) for one sentence (words float [T, H]); module doc. The bounds are in the units of `exact_scores`
        (the score norm applied, the penalty subtracted)."""
        c = min(int(c), self.n)
        m = min(self.fetch * c, len(self.regions))
        d, rows = self._top_regions(words, m)  # [T, m]
        floor = np.where(rows[:, -1:] >= 0, d[:, -1:], -np.inf)  # [T, 1] the m-th dot (IVF may return fewer)
        ok = rows >= 0
        photo = np.where(ok, self.owner[np.maximum(rows, 0)], -1)
        seen = np.unique(photo[ok])
        best = np.repeat(floor, len(seen), 1)  # [T, P]: the floor where a word fetched no region of the photo
        col = np.searchsorted(seen, np.maximum(photo, 0))
        for t in range(len(words)):  # first hit of each (word, photo) is its best (d is sorted)
            tk = ok[t]
            pt, dt = col[t][tk][::-1], d[t][tk][::-1]
            best[t, pt] = np.maximum(best[t, pt], dt)
        scale = float(len(words)) if self.norm == "words" else 1.0  # "words" divides every photo's sum by T
        bound = best.sum(0) / scale
        unseen = float(floor.sum()) / scale  # a photo no word fetched
        if self.penalty is not None:
            bound = bound - self.penalty[seen]
            unseen -= float(self.penalty.min())
        order = np.argsort(-bound, kind="stable")[:c]
        rest = float(np.sort(bound)[::-1][c]) if len(seen) > c else unseen
        return seen[order], bound[order], max(rest, unseen)

    def exact_scores(self, words: np.ndarray, photos: np.ndarray | None = None, chunk: int = 4096,
                     penalty: bool = True) -> np.ndarray:
        """Eq. 8 scores float32 of one sentence (words float [T, H]) with `photos` (default all), in order, less
        each photo's penalty when the index has one (and `penalty`)."""
        photos = np.arange(self.n) if photos is None else np.asarray(photos, np.int64)
        w = torch.from_numpy(np.ascontiguousarray(words, np.float32))
        counts = torch.tensor([len(w)])
        out = np.empty(len(photos), np.float32)
        for s0 in range(0, len(photos), chunk):
            v, mask = self._padded(photos[s0 : s0 + chunk])
            out[s0 : s0 + len(v)] = image_sentence_scores_packed(v, mask, w, counts, kind=self.kind,
                                                                 norm=self.norm)[:, 0].numpy()
        if self.penalty is not None and penalty:
            out = (out - self.penalty[photos]).astype(np.float32)
        return out

    def bank_penalty(self, bank_words: list[np.ndarray], beta: float, chunk: int = 256) -> np.ndarray:
        """float64 [N]: each photo's (1/beta) log sum_b exp(beta s(photo, b)) over the bank's sentences
        (`bank_words`: one float [T_b, H] per sentence; s the eq. 8 score without any penalty), as
        `align.hubness.correction` computes it for the search direction."""
        if not bank_words:
            raise ValueError("the bank has no sentence")
        w = torch.from_numpy(np.ascontiguousarray(np.concatenate(bank_words), np.float32))  # [sum T_b, H]
        counts = torch.tensor([len(x) for x in bank_words])
        out = np.empty(self.n, np.float64)
        for s0 in range(0, self.n, chunk):
            photos = np.arange(s0, min(self.n, s0 + chunk))
            v, mask = self._padded(photos)
            s = image_sentence_scores_packed(v, mask, w, counts, kind=self.kind, norm=self.norm)  # [n, Sb]
            out[photos] = hubness.correction(s, beta, 1).numpy()
        return out

    def _padded(self, photos: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        starts, ends = self.offsets[photos], self.offsets[photos + 1]
        r = int((ends - starts).max())
        v = np.zeros((len(photos), r, self.dim), np.float32)
        mask = np.zeros((len(photos), r), bool)
        if r == self.max_regions and np.all(ends - starts == r):  # equal counts: one gather
            rows = starts[:, None] + np.arange(r)[None, :]
            v[:] = self.regions[rows]
            mask[:] = True
        else:
            for n, (a, b) in enumerate(zip(starts, ends)):
                v[n, : b - a] = self.regions[a:b]
                mask[n, : b - a] = True
        return torch.from_numpy(v), torch.from_numpy(mask)

    def search(self, words: np.ndarray, k: int = 10, candidates: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(photo indices int64 [<= k], scores float32 as `exact_scores`) of one sentence: candidates, then the
        exact rerank."""
        c = max(k, int(candidates) if candidates is not None else max(100, 10 * k))
        cap = max(c, int(self.max_rerank * self.n))
        while True:
            cand, _, rest = self.candidates(words, c)
            s = self.exact_scores(words, cand)
            order = np.argsort(-s, kind="stable")[:k]
            # the bound holds for the sum of kind "max" with an exact (flat) region search
            self.last_exact = False
            if self.kind == "max" and self.exact_fetch:
                kth = float(s[order[-1]]) if len(order) == k else -np.inf
                self.last_exact = bool(kth >= rest - 1e-6 * max(1.0, abs(rest)))
            if self.last_exact or not self.exact_fetch or c >= min(cap, self.n):
                return cand[order], s[order]
            c = min(4 * c, cap, self.n)  # not proven: fetch and rerank more, up to max_rerank of the photos

    def exhaustive(self, words: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(photo indices, scores) of the exact top k over every photo (the reference; scores as `exact_scores`)."""
        s = self.exact_scores(words)
        top = np.argsort(-s, kind="stable")[:k]
        return top, s[top]


class Index:
    """A searchable photo collection of an `Aligner` (module doc)."""

    def __init__(self, aligner, ids: list[str], paths: list[str | None], regions: np.ndarray, offsets: np.ndarray,
                 failed: list[dict] | None = None, penalty: np.ndarray | None = None, hubness: dict | None = None,
                 **vector_kw):
        self.aligner, self.ids, self.paths = aligner, list(ids), list(paths)
        self.failed = failed or []
        self.hubness = hubness  # {"beta", "sentences"} of the bank behind `penalty` (module doc), or None
        if not self.ids:
            raise DataError("index", "no photo could be indexed" + (
                f" ({len(self.failed)} failed, e.g. {self.failed[0]['path']}: {self.failed[0]['reason']})"
                if self.failed else ""))
        cfg = aligner.cfg if aligner is not None else None
        self.vectors = VectorIndex(regions, offsets, kind=getattr(cfg, "score", "max"),
                                   norm=getattr(cfg, "score_norm", "none"), penalty=penalty, **vector_kw)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, aligner, images, path: str | os.PathLike | None = None, show_progress: bool = True,
              log=None) -> Index:
        """Index `images` (paths, PIL images or arrays; a folder path gives its image files). With `path`, the
        regions go to PATH/features (resumable) and the index is saved there too. With the aligner's
        `search_bank` (a run folder's), each photo's bank correction is computed here (module doc)."""
        if isinstance(images, (str, os.PathLike)):
            images = image_files([str(images)])
        items = list(images)
        if not items:
            raise UsageError("Index.build needs at least one image")
        keys = [_key(im, n) for n, im in enumerate(items)]
        if len(set(keys)) != len(keys):
            raise UsageError("Index.build: two images have the same path")
        failed: list[dict] = []
        meta = getattr(aligner.encoder, "meta", None) or {"dim": int(aligner.model.feat_dim), "producer": "api"}
        if path is not None:
            store_dir = Path(path) / "features"
            writer = FeatureStoreWriter(store_dir, meta, part_size=256)
            todo = [(k, im) for k, im in zip(keys, items) if not writer.done(k)]
        else:
            writer, todo = None, list(zip(keys, items))
            mem = MemoryStore(int(meta["dim"]), meta)
        bar = progress(total=len(todo), desc="index: regions", unit="photo", enabled=show_progress)
        try:
            for k, im in todo:
                try:
                    pil = as_rgb(im, aligner.max_pixels, name=k)
                except ImageInputError as e:
                    failed.append({"image_id": k, "path": k, "reason": e.reason})
                    if writer is not None:
                        writer.fail(k, k, e.reason)
                    if log:
                        log(f"skipped {k}: {e.reason}")
                    bar.update(1)
                    continue
                with aligner.lock:
                    boxes, feats, whole = aligner.encoder.encode(pil)
                (writer or mem).add(k, boxes, feats, whole, pil.size)
                bar.update(1)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        store = FeatureStore(store_dir) if writer is not None else mem
        bad = {f["image_id"] for f in failed} | ({f.get("id") for f in store.failed()} if writer else set())
        ids = [k for k in keys if k in store and k not in bad]
        paths = [k if isinstance(im, (str, os.PathLike)) else None for k, im in zip(keys, items)
                 if k in store and k not in bad]
        embs = aligner.embed_store(store, ids) if ids else []
        regions = np.concatenate(embs) if embs else np.zeros((0, 1), np.float32)
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in embs])]).astype(np.int64)
        out = cls(aligner, ids, paths, regions, offsets, failed)
        out.hubness = correct_for_hubs(aligner, out.vectors)
        if path is not None:
            out.save(path)
        return out

    def save(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        atomic_save_npy(p / "regions.npy", self.vectors.regions)
        atomic_save_npy(p / "offsets.npy", self.vectors.offsets)
        if self.vectors.penalty is not None:
            atomic_save_npy(p / "penalty.npy", self.vectors.penalty)
        atomic_write_json(p / "index.json", {
            "format": FORMAT, "checkpoint": getattr(self.aligner, "checkpoint", None),
            "n_photos": len(self.ids), "embed_dim": self.vectors.dim, "score": self.vectors.kind,
            "score_norm": self.vectors.norm, "pool": "mean of region embeddings", "ids": self.ids,
            "paths": self.paths, "failed": self.failed,
            "hubness": self.hubness if self.vectors.penalty is not None else None})
        return p

    @classmethod
    def load(cls, path: str | os.PathLike, aligner=None, device: str = "cpu", **vector_kw) -> Index:
        """A saved index; its aligner is loaded from the checkpoint it was built with unless given."""
        p = Path(path)
        try:
            meta = json.loads((p / "index.json").read_text())
            regions = np.load(p / "regions.npy")
            offsets = np.load(p / "offsets.npy")
            penalty = np.load(p / "penalty.npy") if meta.get("hubness") else None
        except (OSError, ValueError) as e:
            raise DataError(str(p), f"not a dvsa index ({type(e).__name__}: {e}); build one with `dvsa index`") from None
        if meta.get("format") != FORMAT:
            raise DataError(str(p / "index.json"), f"unsupported index format {meta.get('format')}")
        if aligner is None:
            ck = meta.get("checkpoint")
            if not ck or not Path(ck).is_file():
                raise CheckpointError(f"{p}: the index's alignment checkpoint {ck!r} is missing; pass an aligner")
            aligner = Aligner.load(ck, device=device)
        out = cls(aligner, meta["ids"], meta["paths"], regions, offsets, meta.get("failed"), penalty,
                  meta.get("hubness"), **vector_kw)
        if regions.shape[1] != int(aligner.model.cfg.embed_dim):
            raise CheckpointError(f"{p}: embeddings of size {regions.shape[1]} do not match the aligner's "
                                  f"{aligner.model.cfg.embed_dim}")
        return out

    def search(self, sentence: str, k: int = 10, candidates: int | None = None, exhaustive: bool = False) -> list[dict]:
        """The `k` photos that score best with `sentence` (eq. 8, less each photo's bank correction when the index
        has one): [{"rank", "image_id", "path", "score"}]."""
        if k < 1:
            raise UsageError(f"k must be >= 1, got {k}")
        words = self.aligner.embed_sentence(sentence)
        if exhaustive:
            idx, scores = self.vectors.exhaustive(words, k)
        else:
            idx, scores = self.vectors.search(words, k, candidates)
        return [{"rank": n + 1, "image_id": self.ids[i], "path": self.paths[i], "score": float(s)}
                for n, (i, s) in enumerate(zip(idx.tolist(), scores.tolist()))]


def correct_for_hubs(aligner, vectors: VectorIndex) -> dict | None:
    """Give `vectors` the bank correction of the aligner's `search_bank` (module doc); returns the bank's
    {"beta", "sentences"}, or None (no bank: eq. 8 as it is)."""
    bank = getattr(aligner, "search_bank", None)
    if bank is None:
        return None
    texts, beta = bank
    words = [w for w in (aligner.embed_sentence(t) for t in texts) if len(w)]
    vectors.penalty = vectors.bank_penalty(words, beta)
    return {"beta": float(beta), "sentences": len(words)}


def _key(image, n: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return Path(image).as_posix()
    return f"image{n}"


def search_recall(aligner, store, records, k: int = 10, candidates: int | None = None,
                  show_progress: bool = True) -> dict:
    """Image search R@k of every sentence of `records` over their images in `store`, exhaustive against the
    index's candidates + rerank (`VectorIndex.search`), on the same sentences: {"n_images", "n_queries",
    "recall_exhaustive", "recall_index" (fractions), "kept" (recall_index / recall_exhaustive), "same_top_k"
    (fraction of queries whose top k is the exhaustive one), "proven" (fraction provably exhaustive),
    "hubness"}. With the aligner's `search_bank` (a run folder's) the photos carry their bank correction, as an
    index built from that run does, and "recall_plain" is the exhaustive eq. 8 R@k without it."""
    recs = [r for r in records if r.id in store and r.sentences]
    if not recs:
        raise DataError(str(getattr(store, "path", store)), "no image of the records is in the store")
    ids = [r.id for r in recs]
    embs = aligner.embed_store(store, ids)
    vi = VectorIndex(np.concatenate(embs), np.concatenate([[0], np.cumsum([len(e) for e in embs])]),
                     kind=aligner.cfg.score, norm=aligner.cfg.score_norm)
    hub = correct_for_hubs(aligner, vi)
    hit_e = hit_a = hit_p = same = proven = n = 0
    queries = [(i, s.raw) for i, r in enumerate(recs) for s in r.sentences]
    for i, text in progress(queries, desc="search recall", unit="query", enabled=show_progress):
        words = aligner.embed_sentence(text)
        if len(words) == 0:
            continue
        a, _ = vi.search(words, k, candidates)
        proven += vi.last_exact
        e, _ = vi.exhaustive(words, k)
        hit_a += i in a.tolist()
        hit_e += i in e.tolist()
        hit_p += i in (np.argsort(-vi.exact_scores(words, penalty=False), kind="stable")[:k].tolist() if hub
                       else e.tolist())
        same += set(a.tolist()) == set(e.tolist())
        n += 1
    return {"n_images": len(recs), "n_queries": n, "k": k, "backend": vi.backend, "hubness": hub,
            "recall_exhaustive": hit_e / max(1, n), "recall_index": hit_a / max(1, n),
            "recall_plain": hit_p / max(1, n),
            "kept": hit_a / max(1, hit_e), "same_top_k": same / max(1, n), "proven": proven / max(1, n)}
