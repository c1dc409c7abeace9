"""Photo search at scale: FAISS candidates + exact eq. 8 rerank keep the exhaustive top 10; `dvsa index` and
`dvsa retrieve --index`; the load test of the web app on a small scale."""
import json
import shutil

import numpy as np
import pytest
import torch
from api_fakes import toy_run
from dvsa.align import hubness
from dvsa.align.aligner import Aligner
from dvsa.align.index import Index, VectorIndex, search_recall
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


@pytest.mark.parametrize("norm", ["none", "words"])
def test_bank_penalty_and_the_corrected_search(norm):
    """Each photo's bank correction equals `hubness.correction` of its exact scores with the bank's sentences,
    scored one by one; with it, the bounds stay bounds of the corrected scores and the search keeps the
    exhaustive corrected top 10 (and is never wrongly "proven")."""
    v, offsets, codes = synthetic_photos(600, regions=5, dim=16, objects=60)
    plain = VectorIndex(v, offsets, norm=norm, use_faiss=False)
    bank = synthetic_queries(codes, 40, seed=7)
    slow = np.stack([plain.exact_scores(w) for w in bank], 1)  # [N, Sb]
    pen = plain.bank_penalty(bank, 1.5, chunk=64)
    np.testing.assert_allclose(pen, hubness.correction(torch.from_numpy(slow), 1.5, 1).numpy(), rtol=1e-5, atol=1e-5)
    vi = VectorIndex(v, offsets, norm=norm, penalty=pen, fetch=1)
    kept = 0
    for w in synthetic_queries(codes, 40):
        exact = plain.exact_scores(w) - pen
        np.testing.assert_allclose(vi.exact_scores(w), exact, rtol=1e-5, atol=1e-5)
        cand, bound, rest = vi.candidates(w, 30)
        assert np.all(bound >= exact[cand] - 1e-5)
        assert np.all(exact[np.setdiff1d(np.arange(vi.n), cand)] <= rest + 1e-5)
        a, _ = vi.search(w, 10)
        same = set(a.tolist()) == set(np.argsort(-exact, kind="stable")[:10].tolist())
        assert same or not vi.last_exact
        kept += same
    assert kept >= 39


def test_an_index_of_a_run_with_a_bank_ranks_by_the_corrected_score(tmp_path, tmp_path_factory, capsys):
    """A run whose retrieval stage chose a search beta: `dvsa index` stores each photo's correction, and the
    scores of `dvsa retrieve --index` are eq. 8 less it, as the aligner scores them one by one."""
    run = tmp_path / "run"
    shutil.copytree(toy_run(tmp_path_factory), run)
    texts = ["a red square", "a green triangle", "a red circle", "a blue square"]
    (run / "retrieval.done.json").write_text(json.dumps({"result": {"bank": {"beta": [1.0, 2.0], "texts": texts}}}))
    out = tmp_path / "idx"
    assert cli.main(["index", str(run), "--images", str(run / "photos"), "--out", str(out)]) == 0
    assert json.loads((out / "index.json").read_text())["hubness"] == {"beta": 2.0, "sentences": 4}
    idx = Index.load(out)
    top = idx.search("a blue circle", k=3)
    plain = VectorIndex(idx.vectors.regions, idx.vectors.offsets, norm=idx.vectors.norm, use_faiss=False)
    query = plain.exact_scores(idx.aligner.embed_sentence("a blue circle"))  # [N] eq. 8
    bank = np.stack([plain.exact_scores(idx.aligner.embed_sentence(t)) for t in texts], 1)  # [N, Sb]
    expect = query - torch.logsumexp(2.0 * torch.from_numpy(bank).double(), 1).numpy() / 2.0
    assert [r["image_id"] for r in top] == [idx.ids[i] for i in np.argsort(-expect, kind="stable")[:3]]
    np.testing.assert_allclose([r["score"] for r in top], np.sort(expect)[::-1][:3], atol=1e-4)
    assert not np.allclose(expect, query, atol=0.1)  # the correction does something here
    capsys.readouterr()
    assert cli.main(["retrieve", "--index", str(out), "a blue circle", "--k", "3"]) == 0
    assert "bank" in capsys.readouterr().out


def test_index_and_retrieve_commands(tmp_path, tmp_path_factory, capsys):
    run = toy_run(tmp_path_factory)
    out = tmp_path / "idx"
    assert cli.main(["index", str(run), "--images", str(run / "photos"), "--out", str(out)]) == 0
    meta = json.loads((out / "index.json").read_text())
    assert meta["n_photos"] == 24 and (out / "features" / "meta.json").is_file()
    assert meta["hubness"] is None and not (out / "penalty.npy").exists()  # the toy run has no bank
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
