"""Training curves: curves.png beside history.json after every epoch of both trainers; plot_history's edge cases."""
import json

import pytest
from align_fakes import one_thread  # noqa: F401 (autouse fixture)
from dvsa.align.train import train_alignment
from dvsa.data import curves, training
from dvsa.data.curves import plot_history, render_history
from dvsa.generate.train import train_generator
from PIL import Image
from test_align_train import make_toy as align_toy
from test_align_train import toy_cfg
from test_generate_train import make_toy as gen_toy
from test_generate_train import small

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    assert path.read_bytes()[:8] == PNG
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_two_epoch_alignment_training_writes_its_curves(tmp_path):
    records, store = align_toy(tmp_path / "store", n_train=20, n_val=6, n_test=0)
    train_alignment(records, store, tmp_path / "run", toy_cfg(epochs=2), progress=False, log=lambda *a: None)
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(hist) == 2 and "val" in hist[0]
    w, h = png_size(tmp_path / "run" / "curves.png")
    assert w > h > 100  # loss and validation side by side
    assert not list((tmp_path / "run").glob("*.tmp*"))


def test_two_epoch_generator_training_writes_its_curves(tmp_path):
    recs, store, _ = gen_toy(tmp_path)
    train_generator(small(epochs=2, val_images=8), store, recs, tmp_path / "run", progress=False, log=lambda *a: None)
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(hist) == 2 and "val_cider" in hist[0]
    png_size(tmp_path / "run" / "curves.png")


def test_the_curves_are_redrawn_after_every_epoch(tmp_path, monkeypatch):
    drawn = []
    real = training.plot_history
    monkeypatch.setattr(training, "plot_history", lambda h, p, t: drawn.append(len(h)) or real(h, p, t))
    recs, store, _ = gen_toy(tmp_path, n=50)
    train_generator(small(epochs=3, val_images=4), store, recs, tmp_path / "run", progress=False, log=lambda *a: None)
    assert drawn == [1, 2, 3]


ALIGN_ROW = {"epoch": 1, "loss": 2.0, "val": {"annotation": {"r1": 10.0, "r5": 30.0, "r10": 50.0},
                                              "search": {"r1": 8.0, "r5": 25.0, "r10": 40.0}, "rsum": 163.0}}


@pytest.mark.parametrize("history", [
    [],
    [{"epoch": 1, "loss": 1.5}],  # one epoch, no validation
    [{"epoch": 1, "loss": 1.5}, {"epoch": 2, "loss": 1.2}],  # no validation at all
    [ALIGN_ROW],  # one epoch with recalls
    [ALIGN_ROW, {**ALIGN_ROW, "epoch": 2, "loss": 1.5}, {"epoch": 3, "loss": 1.4}],  # validation missing later
    [{"epoch": 1, "loss": 2.0, "val": {"rsum": 120.0}}, {"epoch": 2, "loss": 1.0, "val": {"rsum": 150.0}}],
    [{"epoch": 1, "loss": 2.0, "val_cider": 0.1}, {"epoch": 2, "loss": 1.0, "val_cider": float("nan")}],
    [{"epoch": 1, "loss": None}, {"epoch": 2}, "not a row"],  # odd rows are drawn as gaps or left out
])
def test_plot_history_handles_every_kind_of_history(tmp_path, history):
    path = plot_history(history, tmp_path / "c.png", "a title")
    assert path == tmp_path / "c.png"
    png_size(path)
    assert not list(tmp_path.glob("*.tmp*"))


def test_the_validation_panel_follows_what_the_history_has():
    assert curves._validation([{"epoch": 1, "loss": 1.0}]) == ("", {})
    label, lines = curves._validation([ALIGN_ROW])
    assert label.startswith("validation recall") and len(lines) == 6 and lines["search R@10"] == [40.0]
    assert curves._validation([{"epoch": 1, "loss": 1, "val": {"rsum": 9.0}}])[1] == {"R@K sum": [9.0]}
    assert curves._validation([{"epoch": 1, "loss": 1, "val_cider": 0.5}]) == ("validation CIDEr", {"CIDEr": [0.5]})
    # with validation the figure is wider (two panels)
    one = Image.open(__import__("io").BytesIO(render_history([{"epoch": 1, "loss": 1.0}])))
    two = Image.open(__import__("io").BytesIO(render_history([ALIGN_ROW])))
    assert two.size[0] > one.size[0]


def test_write_history_survives_a_curve_that_cannot_be_drawn(tmp_path, monkeypatch):
    def boom(*a):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(training, "plot_history", boom)
    with pytest.warns(RuntimeWarning, match="training curves not drawn"):
        training.write_history(tmp_path, [{"epoch": 1, "loss": 2.5}])
    assert json.loads((tmp_path / "history.json").read_text())[0]["loss"] == 2.5
    assert not (tmp_path / "curves.png").exists()


def test_write_history_draws_curves_beside_history_json(tmp_path):
    training.write_history(tmp_path, [{"epoch": 1, "loss": 2.5}, {"epoch": 2, "loss": 2.0}], title="t")
    png_size(tmp_path / "curves.png")
