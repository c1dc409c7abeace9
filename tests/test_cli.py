"""The `dvsa` command: help, unknown commands, and every registered command module answering --help."""
import importlib
import subprocess
import sys

import pytest
from dvsa.scripts import cli


def _help_code(module: str, argv=("--help",)) -> int:
    mod = importlib.import_module(module)
    try:
        return int(mod.main(list(argv)) or 0)
    except SystemExit as e:  # argparse exits after printing help
        return int(e.code or 0)


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_no_arguments_prints_usage(capsys):
    assert cli.main([]) == 0
    assert "usage: dvsa" in capsys.readouterr().out


def test_unknown_command_exits_2(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["align", "generate", "bench"])
def test_unknown_subcommand_exits_2(name, capsys):
    assert cli.main([name, "no-such-sub"]) == 2
    assert "unknown command" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_answers_help(name, capsys):
    assert _help_code(cli.COMMANDS[name][0]) == 0
    assert "usage" in capsys.readouterr().out.lower()


def _sub_modules():
    out = []
    for group in ("dvsa.scripts.align", "dvsa.scripts.generate", "dvsa.scripts.bench"):
        for sub, (module, _) in importlib.import_module(group).TABLE.items():
            out.append(module)
    return out


@pytest.mark.parametrize("module", _sub_modules())
def test_every_subcommand_answers_help(module, capsys):
    assert _help_code(module) == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "dvsa.scripts.cli", "nope"], capture_output=True, text=True)
    assert r.returncode == 2


def test_user_faults_end_in_one_line_with_their_exit_code(tmp_path, capsys):
    """A DvsaError or an OSError from any subcommand: one line on stderr, exit 1 (2 for usage), no traceback;
    --debug lets the traceback through."""
    missing = tmp_path / "nope.pt"
    code = cli.main(["caption", "--checkpoint", str(missing), "--images", str(tmp_path), "--out",
                     str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and str(missing) in err, err
    assert len(err.strip().splitlines()) == 1, err
    with pytest.raises(Exception):
        cli.main(["--debug", "caption", "--checkpoint", str(missing), "--images", str(tmp_path), "--out",
                  str(tmp_path / "c.json")])
