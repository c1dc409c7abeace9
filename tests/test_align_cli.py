"""dvsa align train / align eval / retrieve end to end on the toy, through a Karpathy split JSON."""
import json

from align_fakes import one_thread  # noqa: F401 (autouse fixture)
from dvsa.scripts import align_eval, align_train, cli, retrieve
from test_align_train import make_toy


def write_karpathy(records, path):
    images = [{"filename": f"{r.id}.png", "imgid": k, "split": r.split, "sentids": [s.id for s in r.sentences],
               "sentences": [{"raw": s.raw, "tokens": s.tokens, "imgid": k, "sentid": s.id} for s in r.sentences]}
              for k, r in enumerate(records)]
    path.write_text(json.dumps({"dataset": "toy", "images": images}))


def test_train_eval_retrieve(tmp_path, capsys):
    records, _ = make_toy(tmp_path / "store", n_train=40, n_val=10, n_test=10)
    write_karpathy(records, tmp_path / "dataset_toy.json")
    common = ["--store", str(tmp_path / "store"), "--dataset", "karpathy", "--root", str(tmp_path / "dataset_toy.json")]
    flags = [a for kv in ("embed_dim=24", "hidden_dim=16", "word_dim=12", "min_count=1", "batch_size=20", "epochs=3",
                          "lr=0.003", "amp=false") for a in ("--set", f"align.{kv}")] + ["--quiet"]
    assert align_train.main(common + ["--out", str(tmp_path / "run")] + flags) == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["embed_dim"] == 24 and cfg["epochs"] == 3 and cfg["amp"] is False
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 3
    ck = str(tmp_path / "run" / "model.pt")

    out = tmp_path / "metrics.json"
    assert align_eval.main(["--checkpoint", ck, *common, "--split", "test", "--protocol", "1k", "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["n_images"] == 10 and m["n_sentences"] == 50 and 0 <= m["annotation"]["r1"] <= 100
    # the command's numbers are those of the saved model on the test split (not a range any output meets)
    from dvsa.align.retrieval import evaluate_retrieval
    from dvsa.align.train import load_alignment
    from dvsa.data.features import FeatureStore

    model, vocab, _ = load_alignment(ck)
    want = evaluate_retrieval(model, FeatureStore(tmp_path / "store"), [r for r in records if r.split == "test"],
                              vocab, protocol="1k")
    assert {d: m[d] for d in ("annotation", "search")} == {d: want[d] for d in ("annotation", "search")}, (m, want)
    assert "R@1" in capsys.readouterr().out
    # --bank-beta: corrected by a bank of train images (align.hubness), the plain ranking beside it
    from dvsa.align.hubness import bank_records

    assert align_eval.main(["--checkpoint", ck, *common, "--split", "test", "--bank-beta", "0.7", "--bank-images", "20",
                            "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    train = [r for r in records if r.split == "train"]
    want = evaluate_retrieval(model, FeatureStore(tmp_path / "store"), [r for r in records if r.split == "test"],
                              vocab, protocol="1k", bank=bank_records(train, FeatureStore(tmp_path / "store"), 20),
                              bank_sentences=1, betas=(0.7,))
    assert m["bank"]["images"] == 20 and m["annotation"] == want["annotation"] and m["search"] == want["search"]
    assert m["plain"]["annotation"] == want["plain"]["annotation"]
    assert "eq. 8 scores alone" in capsys.readouterr().out

    assert retrieve.main(["--checkpoint", ck, *common, "--sentence", "w1 and w2", "--k", "3",
                          "--out", str(tmp_path / "s.json")]) == 0
    res = json.loads((tmp_path / "s.json").read_text())["results"]
    assert len(res) == 3 and res[0]["score"] >= res[1]["score"] >= res[2]["score"]
    assert all(r["image_id"].startswith("img") for r in res)
    assert retrieve.main(["--checkpoint", ck, *common, "--image", "img55", "--k", "4",
                          "--out", str(tmp_path / "i.json")]) == 0
    res = json.loads((tmp_path / "i.json").read_text())["results"]
    assert len(res) == 4 and {"text", "sentence_id", "correct"} <= set(res[0])


def test_cli_errors_name_the_problem(tmp_path, capsys):
    records, _ = make_toy(tmp_path / "store", n_train=4, n_val=0, n_test=2)
    write_karpathy(records, tmp_path / "d.json")
    common = ["--store", str(tmp_path / "store"), "--dataset", "karpathy", "--root", str(tmp_path / "d.json")]
    assert cli.main(["align", "eval", "--checkpoint", str(tmp_path / "nope.pt"), *common]) == 1
    assert "nope.pt" in capsys.readouterr().err
    # a value AlignConfig refuses is a usage error (exit 2), named, before any work
    assert cli.main(["align", "train", *common, "--out", str(tmp_path / "r"), "--set", "align.score=mean"]) == 2
    err = capsys.readouterr().err
    assert "score" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
