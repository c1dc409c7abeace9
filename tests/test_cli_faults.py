"""One command-line vocabulary and one exit-code rule for every ``dvsa`` subcommand.

Vocabulary: every subcommand's --help has --quiet; --device (cpu/cuda/auto) where a command runs torch; --set
STAGE.KEY=VALUE where it has stage settings; never --config KEY=VALUE (a --config is a JSON file).
Faults, each named: 0 success, 1 a runtime or data fault, 2 a usage fault; one line on stderr, no traceback.
"""
import importlib
import json
import re

import pytest
import torch
from dvsa.data.errors import ConfigError
from dvsa.data.overrides import parse_set
from dvsa.scripts import cli
from snippets_fakes import random_world


def _modules() -> dict[str, str]:
    """{"align train": "dvsa.scripts.align_train", ...} of every command and sub-subcommand."""
    out = {}
    for name, (module, _) in cli.COMMANDS.items():
        table = getattr(importlib.import_module(module), "TABLE", None)
        if table is None:
            out[name] = module
        else:
            out.update({f"{name} {sub}": m for sub, (m, _) in table.items()})
    return out


MODULES = _modules()
# commands that run torch on a device (the benchmarks of the feature recipe and the aligner take theirs from
# their configs; bench serve / bench index build toys)
DEVICE = {"features", "retrieve", "caption", "dense", "pipeline", "demo", "align train", "align eval",
          "align snippets", "align evaluate", "align show", "generate train", "generate eval", "bench decode",
          "serve", "index"}
SETTINGS = {"features": "region", "pipeline": "align", "demo": "synthetic", "align train": "align",
            "align snippets": "snippets", "align boxscore": "box_score", "generate train": "gen",
            "bench features": "region", "synth": "synthetic"}


def _help(name: str, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        importlib.import_module(MODULES[name]).main(["--help"])
    assert e.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_subcommand_speaks_the_vocabulary(name, capsys):
    text = _help(name, capsys)
    assert "--quiet" in text, name
    if name in DEVICE:
        assert "--device" in text and "{cpu,cuda,auto}" in text, name
    if name in SETTINGS:
        assert "--set STAGE.KEY=VALUE" in text and SETTINGS[name] in text, name
    assert all(v.strip("[]") == "FILE.json" for v in re.findall(r"--config[ =](\S+)", text)), name  # never k=v
    assert "--synthetic" not in text and "--no-progress" not in text, name
    if "--images" in text:  # a folder or files, never a count
        assert "--images PATH [PATH ...]" in text or "image folder" in text, name


def _run(capsys, *argv) -> tuple[int, str]:
    """(exit status, stderr) of ``dvsa ARGV`` (argparse's exit included)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("argv, words", [
    (["caption", "--checkpoint", "c.pt", "--images", ".", "--out", "o.json", "--beam", "0"], ["--beam", "> 0"]),
    (["dense", "--checkpoint", "c.pt", "--images", ".", "--out", "o.json", "--beam", "0"], ["--beam", "> 0"]),
    (["generate", "eval", "--checkpoint", "c", "--store", "s", "--dataset", "d", "--root", "r", "--out", "o",
      "--beam", "1,0"], ["--beam", "> 0"]),
    (["vectors", "--dataset", "d", "--root", "r", "--train", "--out", "o.npy", "--epochs", "-1"], ["--epochs"]),
    (["pipeline", "--dataset", "d", "--root", "r", "--out", "o", "--limit", "-2"], ["--limit", "> 0"]),
    (["features", "--dataset", "d", "--root", "r", "--out", "o", "--limit", "0"], ["--limit"]),
    (["align", "snippets", "--checkpoint", "c", "--store", "s", "--dataset", "d", "--root", "r", "--out", "o",
      "--limit", "-1"], ["--limit"]),
    (["align", "show", "--checkpoint", "c", "--store", "s", "--dataset", "d", "--root", "r", "--out", "o",
      "--n-images", "0"], ["--n-images"]),
    (["bench", "decode", "--n-images", "-3"], ["--n-images"]),
    (["caption", "--checkpoint", "c.pt", "--images", ".", "--out", "o.json", "--device", "tpu"], ["--device"]),
])
def test_out_of_range_flags_are_usage_errors(argv, words, capsys):
    code, err = _run(capsys, *argv)
    line = _one_line(err)
    assert code == 2 and all(w in line for w in words), line


@pytest.mark.parametrize("argv", [
    ["caption", "--checkpoint", "c.pt", "--images", ".", "--out", "o.json", "--device", "cuda"],
    ["pipeline", "--dataset", "d", "--root", "r", "--out", "o", "--device", "cuda"],
    ["align", "train", "--store", "s", "--dataset", "d", "--root", "r", "--out", "o", "--device", "cuda"],
])
def test_device_cuda_without_cuda_is_refused_by_the_parser(argv, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = _run(capsys, *argv)
    line = _one_line(err)
    assert code == 2 and "--device" in line and "CUDA" in line, line


def test_device_auto_without_cuda_is_the_cpu(monkeypatch):
    from dvsa.scripts._args import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device("auto") == "cpu" and device("cpu") == "cpu"


def test_pipeline_set_of_the_wrong_type_fails_before_any_stage(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _run(capsys, "pipeline", "--dataset", "synthetic", "--root", tmp_path / "data", "--out", out,
                     "--set", "align.epochs=abc")
    line = _one_line(err)
    assert code == 2 and "align.epochs" in line and "abc" in line and "int" in line, line
    assert not (out / "features").exists()


@pytest.mark.parametrize("argv, words", [
    (["pipeline", "--dataset", "d", "--root", "r", "--out", "o", "--set", "align.nope=1"],
     ["align.nope", "embed_dim"]),
    (["pipeline", "--dataset", "d", "--root", "r", "--out", "o", "--set", "aling.epochs=1"], ["aling", "align"]),
    (["pipeline", "--dataset", "d", "--root", "r", "--out", "o", "--set", "gen.hidden=1.5"], ["gen.hidden", "int"]),
    (["pipeline", "--dataset", "d", "--root", "r", "--out", "o", "--set", "region.pretrained=maybe"],
     ["pretrained", "bool"]),
    (["features", "--dataset", "d", "--root", "r", "--out", "o", "--set", "region.nope=1"], ["nope", "backend"]),
    (["features", "--dataset", "d", "--root", "r", "--out", "o", "--set", "nope=1"], ["stage", "region"]),
    (["align", "train", "--store", "s", "--dataset", "d", "--root", "r", "--out", "o", "--set", "align.nope=1"],
     ["nope", "embed_dim"]),
    (["generate", "train", "--store", "s", "--dataset", "d", "--root", "r", "--out", "o", "--set", "gen.cell=gru"],
     ["cell", "lstm"]),
    (["demo", "--out", "o", "--set", "synthetic.n_trian=5"], ["n_trian", "n_train"]),
])
def test_unknown_or_mistyped_set_is_a_config_error_naming_the_key(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = _run(capsys, *argv)
    line = _one_line(err)
    assert code == 2 and all(w in line for w in words), line
    assert not (tmp_path / "o").exists()  # nothing was started


def test_set_parser_types():
    from dvsa.align.model import AlignConfig
    from dvsa.align.snippets import SnippetConfig
    from dvsa.generate.caption_eval import CaptionEvalConfig
    from dvsa.generate.pipeline import PipelineConfig

    got = parse_set(["align.epochs=3", "align.lr=1e-3", "align.geometry=true", "align.lr_schedule=none",
                     "snippets.beta=null", "eval.beams=[1,3]", "beams=1,7", "word_vectors=none", "skip=a,b"],
                    {"align": AlignConfig, "snippets": SnippetConfig, "eval": CaptionEvalConfig, "": PipelineConfig})
    assert got["align"] == {"epochs": 3, "lr": 1e-3, "geometry": True, "lr_schedule": "none"}
    assert got["snippets"] == {"beta": None} and got["eval"] == {"beams": (1, 3)}
    assert got[""] == {"beams": (1, 7), "word_vectors": None, "skip": ("a", "b")}
    for bad in ["align.epochs=abc", "align.epochs=2.5", "align.geometry=3", "eval.beams=[1,\"x\"]", "align=3",
                "align.epochs", "=3"]:
        with pytest.raises(ConfigError):
            parse_set([bad], {"align": AlignConfig, "eval": CaptionEvalConfig})


@pytest.fixture
def world(tmp_path, monkeypatch):
    import dvsa.data.catalog

    records, store, _, _ = random_world(tmp_path, seed=1)
    monkeypatch.setattr(dvsa.data.catalog, "load_dataset", lambda name, root, **kw: records)
    return ["--store", tmp_path / "store", "--dataset", "fake", "--root", "r", "--split", "train"]


def _wrong_kind(tmp_path):
    from dvsa.data.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "gen.pt", {"kind": "generate", "config": {}, "model": {}})
    return tmp_path / "gen.pt"


@pytest.mark.parametrize("command", [["align", "snippets"], ["align", "evaluate"], ["align", "show"]])
@pytest.mark.parametrize("fault", ["missing", "wrong kind", "run folder without it"])
def test_a_bad_checkpoint_ends_in_one_line_exit_1(command, fault, world, tmp_path, capsys):
    ck = {"missing": tmp_path / "nope.pt", "wrong kind": _wrong_kind(tmp_path),
          "run folder without it": tmp_path}[fault]
    code, err = _run(capsys, *command, "--checkpoint", ck, *world, "--beta", "0.5", "--out", tmp_path / "out")
    line = _one_line(err)
    assert code == 1 and str(ck) in line, line
    if fault == "wrong kind":
        assert "generate" in line and "align" in line, line


def test_checkpoint_takes_a_pipeline_run_folder(tmp_path):
    from dvsa.generate.pipeline.run_files import resolve_checkpoint

    for rel in ("align/model.pt", "gen_full/model.pt", "gen_region/model.pt", "gen_attention/model.pt", "box_score.pt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert resolve_checkpoint(tmp_path, "align") == tmp_path / "align" / "model.pt"
    assert resolve_checkpoint(tmp_path, "caption") == tmp_path / "gen_full" / "model.pt"
    assert resolve_checkpoint(tmp_path, "dense") == tmp_path / "gen_region" / "model.pt"
    assert resolve_checkpoint(tmp_path, "attention") == tmp_path / "gen_attention" / "model.pt"
    assert resolve_checkpoint(tmp_path, "box_score") == tmp_path / "box_score.pt"
    assert resolve_checkpoint(tmp_path / "align", "align") == tmp_path / "align" / "model.pt"  # a training folder
    assert resolve_checkpoint(tmp_path / "x.pt", "align") == tmp_path / "x.pt"  # a file: the loader checks it


def test_quiet_silences_progress(monkeypatch, capsys):
    from dvsa.data import progress

    monkeypatch.setattr(progress, "_QUIET", [False])
    code, err = _run(capsys, "caption", "--quiet", "--checkpoint", "nope.pt", "--images", ".", "--out", "o.json")
    assert code == 1 and progress.is_quiet()


def test_pipeline_set_reaches_every_stage_and_the_pipeline(tmp_path):
    from dvsa.scripts import pipeline

    args = pipeline.build_parser().parse_args(
        ["--dataset", "d", "--root", "r", "--out", "o", "--seed", "3", "--set", "align.epochs=16",
         "--set", "beams=[1,3]", "--set", "pipeline.report_beam=3", "--set", "region.score_pooling=warp",
         "--set", "box_score.l2=0.1", "--set", "dense.top=2", "--set", "gen_region.epochs=1"])
    cfg = pipeline.config_from_args(args)
    assert cfg.align["epochs"] == 16 and cfg.beams == (1, 3) and cfg.report_beam == 3 and cfg.seed == 3
    assert cfg.region["score_pooling"] == "warp" and cfg.box_score == {"l2": 0.1} and cfg.dense == {"top": 2}
    assert cfg.gen_region["epochs"] == 1 and json.dumps(cfg.align)
