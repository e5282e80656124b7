"""A non-editable install (what `pip install .` or a wheel gives a user) carries every data file the code reads."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "fineked", "editors", "harness")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if (ROOT / p).is_file()]


def test_installed_packages_hold_every_tracked_data_file(tmp_path):
    src, site = tmp_path / "src", tmp_path / "site"
    files = tracked_files()
    for rel in files:  # a copy, so the build leaves no build/ or egg-info in the checkout
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(src)], check=True, capture_output=True)
    data = [p for p in files if p.split("/")[0] in PACKAGES and not p.endswith(".py")]
    assert any(p.endswith("stats_corpus.txt.gz") for p in data) and any(p.endswith(".yaml") for p in data)
    missing = [p for p in data if not (site / p).is_file()]
    assert not missing, f"not installed (add to [tool.setuptools.package-data]): {missing}"
    entry_points = next(site.glob("*.dist-info")) / "entry_points.txt"
    assert "dike" in entry_points.read_text()
