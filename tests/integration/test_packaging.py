"""What a user installs: the wheel carries the documented config file; pyproject.toml only says how to build."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class TestWheel:
    def test_wheel_contains_conf_resonate_yaml(self, tmp_path):
        """pip wheel builds a wheel whose resonate_sync/conf/resonate.yaml is conf/resonate.yaml, byte for byte."""
        # Built from a copy, links kept as links: a build leaves build/ and *.egg-info behind.
        source = tmp_path / "source"
        leftovers = shutil.ignore_patterns(
            ".git", ".venv", ".tox", ".hypothesis", ".pytest_cache", "build", "dist", "*.egg-info", "__pycache__"
        )
        shutil.copytree(REPO, source, symlinks=True, ignore=leftovers)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        [wheel] = tmp_path.glob("resonate_sync-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            shipped = archive.read("resonate_sync/conf/resonate.yaml")
        assert shipped == (REPO / "conf" / "resonate.yaml").read_bytes()


class TestPyproject:
    def test_only_the_build_system(self):
        """pyproject.toml has one table, [build-system], with setuptools: the metadata stays in setup.cfg."""
        text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
        assert re.findall(r"^\[.*\]", text, flags=re.M) == ["[build-system]"]
        assert 'build-backend = "setuptools.build_meta"' in text
