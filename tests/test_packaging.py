"""The project installs as one package, `dvsa`: nothing generic (data, scripts, align, generate) at the top level
of site-packages, and a user's own `data/` package never shadows ours nor is shadowed by it."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_the_wheel_holds_only_dvsa(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("dvsa-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"dvsa"}, top
    for pkg in ("dvsa/align", "dvsa/align/regions", "dvsa/generate", "dvsa/data", "dvsa/data/readers",
                "dvsa/scripts"):
        assert f"{pkg}/__init__.py" in names, pkg
    assert not any(n.startswith("dvsa/tests/") for n in names)


def test_a_folder_with_its_own_data_package(tmp_path):
    """From a folder whose `data/` is the user's: `import dvsa.data, data` gives each the right one, and the
    `dvsa` command runs."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "__init__.py").write_text("MINE = True\n")
    code = ("import dvsa.data, data, dvsa.data.features; assert data.MINE; "
            "assert not hasattr(dvsa.data, 'MINE'); print(dvsa.data.__file__)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve() == (REPO / "data" / "__init__.py").resolve()
    r = subprocess.run([str(BIN / "dvsa"), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and "usage: dvsa COMMAND" in r.stdout, r.stderr
