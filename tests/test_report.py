"""The pipeline report's Training section: each trained model's curves.png inlined beside the alignment pictures."""
import base64
import json
import re

from dvsa.data.curves import plot_history
from dvsa.generate.pipeline.report import build_html, rebuild_report, training_section

ALIGN_HISTORY = [{"epoch": e, "loss": 2.0 / e, "val": {"annotation": {"r1": 10.0 * e, "r5": 20.0 * e, "r10": 30.0 * e},
                                                       "search": {"r1": 5.0 * e, "r5": 15.0 * e, "r10": 25.0 * e},
                                                       "rsum": 105.0 * e}} for e in (1, 2)]
GEN_HISTORY = [{"epoch": 1, "loss": 3.0, "val_cider": 0.25}, {"epoch": 2, "loss": 2.0, "val_cider": 0.5}]


def fake_run(tmp_path):
    run = tmp_path / "run"
    for name, hist in (("align", ALIGN_HISTORY), ("gen_full", GEN_HISTORY), ("gen_region", GEN_HISTORY[:1])):
        (run / name).mkdir(parents=True)
        (run / name / "history.json").write_text(json.dumps(hist))
        plot_history(hist, run / name / "curves.png", name)
    (run / "results.json").write_text(json.dumps({"dataset": "toy", "eval_split": "test", "stages": {}}))
    return run


def inlined_pngs(html):
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_the_report_has_a_training_section_with_every_curve(tmp_path):
    run = fake_run(tmp_path)
    html = build_html(run, json.loads((run / "results.json").read_text()))
    assert "<h2>Training" in html
    section = training_section(run)
    for label in ("alignment model", "full-frame generator", "region generator"):
        assert label in section
    pngs = inlined_pngs(section)
    assert len(pngs) == 3 and all(p[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "2 epochs, last loss 1.0000, best validation R@K sum 210.0" in section
    assert "best validation CIDEr 0.5000" in section and "1 epoch, last loss 3.0000" in section
    # the section sits after the alignment pictures' place and before the captions
    assert html.index("<h2>Results") < html.index("<h2>Training")


def test_rebuilt_report_holds_the_curves_self_contained(tmp_path):
    run = fake_run(tmp_path)
    out = rebuild_report(run)
    html = out.read_text()
    assert len(inlined_pngs(html)) >= 3
    assert "curves.png\"" not in html  # inlined, not linked


def test_a_run_without_curves_png_gets_them_drawn_from_history_json(tmp_path):
    run = fake_run(tmp_path)
    (run / "gen_full" / "curves.png").unlink()
    section = training_section(run)
    assert "full-frame generator" in section and len(inlined_pngs(section)) == 3


def test_no_trained_models_no_training_section(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert training_section(run) == ""
    assert "<h2>Training" not in build_html(run, {"dataset": "toy"})
    (run / "align").mkdir()
    (run / "align" / "history.json").write_text("not json")  # unreadable and no picture: left out
    assert training_section(run) == ""


def test_attention_captions_get_their_own_table():
    from dvsa.generate.pipeline.report import results_section

    beams = {"7": {"BLEU-4": 17.0, "CIDEr": 35.4}}
    html = results_section({"captioning_beams": {"7": {"BLEU-4": 17.3, "CIDEr": 35.9}},
                            "captioning_attention_beams": beams})
    assert "Region-attention captions" in html and "35.4" in html and "35.9" in html
    assert "Region-attention" not in results_section({"captioning_beams": {"7": {"BLEU-4": 17.3}}})


def test_caption_vocabulary_is_reported():
    from dvsa.generate.pipeline.report import results_section

    voc = {"n_captions": 80, "distinct_captions": 12, "distinct_words": 40, "mean_words": 9.0,
           "top_caption": "a man is sitting on a bench", "top_caption_share": 0.5}
    html = results_section({"captioning": {"beam": 7}, "captioning_beams": {"7": {"BLEU-4": 1.0}},
                            "captioning_vocabulary": voc})
    assert "12 distinct captions of 80" in html and "(50%)" in html
