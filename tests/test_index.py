"""Photo search at scale: FAISS candidates + exact eq. 8 rerank keep the exhaustive top 10; `dvsa index` and
`dvsa retrieve --index`; the load test of the web app on a small scale."""
import json

import numpy as np
from api_fakes import toy_run
from dvsa.align.aligner import Aligner
from dvsa.align.index import VectorIndex, search_recall
from dvsa.data.features import FeatureStore
from dvsa.data.records import ImageRecord, Sentence
from dvsa.generate.serve.bench import bench_serve, synthetic_photos, synthetic_queries
from dvsa.generate.serve.toy import toy_sentences
from dvsa.scripts import cli


def test_approximate_search_keeps_the_exhaustive_top10():
    v, offsets, codes = synthetic_photos(3000, regions=6, dim=32, objects=100)
    vi = VectorIndex(v, offsets)
    queries = synthetic_queries(codes, 100)
    kept = proven = 0
    for w in queries:
        a, sa = vi.search(w, 10, candidates=150)  # 5% of the photos reranked
        e, se = vi.exhaustive(w, 10)
        same = set(a.tolist()) == set(e.tolist())
        kept += same
        proven += vi.last_exact
        assert same or not vi.last_exact  # "provably exact" is never wrong
    assert kept / len(queries) >= 0.99
    assert vi.backend.startswith("faiss")


def test_candidate_bounds_are_upper_bounds_of_eq8():
    """The threshold-algorithm bound of every candidate (and of every photo left out) is >= its exact eq. 8
    score, checked against exhaustive scoring of every photo."""
    v, offsets, codes = synthetic_photos(400, regions=5, dim=16, objects=40)
    vi = VectorIndex(v, offsets, fetch=1)
    for w in synthetic_queries(codes, 20):
        cand, bound, rest = vi.candidates(w, 30)
        exact = vi.exact_scores(w)  # [N], kind "max", norm "none"
        assert np.all(bound >= exact[cand] - 1e-5)
        others = np.setdiff1d(np.arange(vi.n), cand)
        assert np.all(exact[others] <= rest + 1e-5)


def test_index_and_retrieve_commands(tmp_path, tmp_path_factory, capsys):
    run = toy_run(tmp_path_factory)
    out = tmp_path / "idx"
    assert cli.main(["index", str(run), "--images", str(run / "photos"), "--out", str(out)]) == 0
    meta = json.loads((out / "index.json").read_text())
    assert meta["n_photos"] == 24 and (out / "features" / "meta.json").is_file()
    assert cli.main(["index", str(run), "--images", str(run / "photos"), "--out", str(out)]) == 0  # resumes
    capsys.readouterr()
    html = tmp_path / "top.html"
    assert cli.main(["retrieve", "--index", str(out), "a blue circle", "--k", "3", "--html", str(html)]) == 0
    printed = capsys.readouterr().out
    assert "blue" in printed and html.read_text().count("<img") == 3


def test_bench_serve_small(tmp_path_factory):
    r = bench_serve(toy_run(tmp_path_factory), clients=2, requests=3, log=lambda *a: None)
    assert r["answered"] == 6 and r["errors"] == 0 and r["lost"] == 0 and r["p95_ms"] >= r["p50_ms"] > 0



def test_search_recall_on_a_trained_toy(tmp_path_factory):
    """The real-photo mode of `dvsa bench index` (search_recall): index R@k beside exhaustive R@k on the toy
    run's photos, each queried by its own sentences; with the candidates covering every photo they agree."""
    run = toy_run(tmp_path_factory)
    store = FeatureStore(run / "features")
    recs, sid = [], 0
    for image_id in store.ids:
        colour, shape, _ = image_id.split("_")
        sents = []
        for toks in toy_sentences(colour, shape):
            sents.append(Sentence(sid, " ".join(toks), toks))
            sid += 1
        recs.append(ImageRecord(image_id, f"photos/{image_id}.png", 64, 64, "train", sents))
    r = search_recall(Aligner.load(run), store, recs, k=3, candidates=len(recs), show_progress=False)
    assert r["n_queries"] == 3 * len(recs) and r["n_images"] == len(recs)
    assert r["same_top_k"] == 1.0 and r["recall_index"] == r["recall_exhaustive"] > 3 / len(recs)
