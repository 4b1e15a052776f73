"""The package as a site or the Docker image installs it: a wheel carries every file radnode reads at run time.

``scripts/test.sh`` (the README's test command, and CI) builds the wheel, installs it into a fresh virtual
environment and runs this suite from there; these tests check that the installation, not the source tree, is
what ran, and that the installed web app has its templates and static files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

import radnode
from tests.support.env import REPO, installed_mode, python_path
from tests.support.ports import free_port


def _wheel(tmp_path: Path) -> Path:
    """The wheel under test: the one scripts/test.sh built, else one built now from the source tree."""
    built = os.environ.get("RADNODE_TEST_WHEEL")
    if built:
        return Path(built)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)], check=True, timeout=300)
    [wheel] = tmp_path.glob("radnode-*.whl")
    return wheel


def _source_data_files() -> set[str]:
    """Every non-Python file under radnode/ in the source tree, as a path inside the wheel."""
    out = set()
    for path in (REPO / "radnode").rglob("*"):
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts:
            out.add(path.relative_to(REPO).as_posix())
    return out


def test_ci_tests_the_installed_wheel_not_the_source_tree() -> None:
    if os.environ.get("CI"):
        assert installed_mode(), "CI must run the suite through scripts/test.sh (the installed wheel)"
    if not installed_mode():
        pytest.skip("run from a source checkout (scripts/test.sh tests the installed wheel)")
    here = Path(radnode.__file__).resolve()
    assert (REPO / "radnode") not in here.parents, f"radnode imported from the source tree: {here}"
    assert "site-packages" in here.parts
    # A radnode subprocess started the way the tests start them (cwd in the repository) imports the same.
    probe = subprocess.run(
        [sys.executable, "-c", "import radnode; print(radnode.__file__)"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": python_path()}, capture_output=True, text=True, check=True,
    )
    assert Path(probe.stdout.strip()).resolve() == here


def test_the_wheel_carries_every_file_the_package_reads_at_run_time(tmp_path: Path) -> None:
    names = set(zipfile.ZipFile(_wheel(tmp_path)).namelist())
    data = _source_data_files()
    # The kinds of file the package reads at run time must all be there (a check that the scan is not empty).
    for required in ("radnode/web/templates/login.html", "radnode/web/static/app.css", "radnode/web/static/app.js",
                     "radnode/routing/default_routing.yaml", "radnode/store/migrations/script.py.mako",
                     "radnode/models/glioma-demo-unet/model.onnx", "radnode/models/glioma-demo-unet/manifest.yaml",
                     "radnode/models/metastasis-demo/model.onnx", "radnode/models/metastasis-demo/manifest.yaml",
                     "radnode/routing/models/series_classifier.json"):
        assert required in data, required
    missing = sorted(data - names)
    assert not missing, f"files missing from the wheel (pyproject [tool.setuptools.package-data]): {missing}"
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "radnode").rglob("*.py") if "__pycache__" not in p.parts}
    assert not sorted(sources - names), sorted(sources - names)


def test_installed_web_app_serves_login_with_its_stylesheet_and_scripts(tmp_path: Path) -> None:
    """``radnode web`` from the installation answers /login, and every asset the page links to is there."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADNODE_")}
    env.update(RADNODE_DATA_DIR=str(tmp_path / "data"), RADNODE_WEB__SECURE_COOKIES="false", PYTHONPATH=python_path())
    log = tmp_path / "web.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "radnode.cli", "web", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, cwd=tmp_path, stdout=fh, stderr=fh)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                page = urllib.request.urlopen(f"{base}/login", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert page.status == 200
        html = page.read().decode()
        assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', html)
        assert any(a.endswith(".css") for a in assets) and any(a.endswith(".js") for a in assets), assets
        for asset in assets:
            with urllib.request.urlopen(base + asset, timeout=5) as r:
                assert r.status == 200 and r.read(), asset
    finally:
        proc.terminate()
        proc.wait(20)


def test_the_radnode_console_script_of_the_installation_runs(tmp_path: Path) -> None:
    """The README's commands (`radnode demo`, `radnode web` …) start through this script."""
    script = Path(sys.executable).parent / "radnode"
    assert script.is_file(), f"no console script beside {sys.executable}"
    res = subprocess.run([str(script), "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                         env={**os.environ, "PYTHONPATH": python_path()})
    assert res.returncode == 0 and res.stdout.startswith("radnode, version ") and radnode.__version__ in res.stdout, res
