"""analogmem as a library user gets it (issue 26): a wheel built from this checkout, installed
non-editable into a fresh virtual environment, used from outside the source tree.

The fresh environment is ``python -m venv`` without the project's packages; its own
``site-packages`` gets the wheel (``pip install --no-deps --no-index``: nothing is fetched), and
a ``.pth`` line makes the project ``.venv``'s installed dependencies (numpy, torch, ...)
importable after it. A ``.pth`` line adds a folder to ``sys.path`` without running the ``.pth``
files inside it, so the project's editable install (a ``.pth`` finder there) stays out: the
only analogmem the environment can import is the installed wheel, which the test checks.
(``venv --system-site-packages`` would not do: made from the project's interpreter it exposes
the *base* interpreter's site-packages, not the project's dependencies.)

Checked from a folder outside the checkout: ``analogmem devices``, ``analogmem cells`` (tiny),
a ``bench serve`` / ``bench program`` / ``bench read`` round trip over loopback, and
``program_model``; the wheel's metadata (SPDX licence, LICENSE file), its stripped extension
modules; the sdist's tests with the helpers they import; and, from the repository root, that a
checkout shadowing the installed wheel still finds the bundled cards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} -> {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed():
    """``(venv python, its bin folder, a work folder outside the checkout, the wheel)``, in a
    folder of its own: pytest's numbered temporary folders are pruned by any other pytest run
    of the same user, which on a shared machine can remove a module-long environment mid-way."""
    with tempfile.TemporaryDirectory(prefix="analogmem-wheel-") as name:
        yield _install(Path(name))


def _install(tmp: Path):
    dist = tmp / "dist"
    # in-tree build (pip's default): build/ in the checkout is reused, so only the first run compiles
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, ROOT], ROOT,
         timeout=900)
    (wheel,) = dist.glob("analogmem-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp)
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).stdout.strip())
    # install first, then expose the dependencies: pip works on a bare environment, without the
    # project's editable analogmem (whose metadata lies among the dependencies) in view
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "--ignore-installed",
          "-q", wheel], tmp)
    (site / "zz_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp / "elsewhere"
    work.mkdir()
    return py, venv / "bin", work, wheel


def _env(bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    return env


def test_the_installed_wheel_is_what_imports(installed):
    py, bin_dir, work, _ = installed
    out = _run([py, "-c", "import analogmem, analogmem.devices, analogmem.emulator._kernels as k; "
                          "print(analogmem.__file__); print(k.__file__); print(len(analogmem.bundled_devices()))"],
               work, _env(bin_dir)).stdout.split()
    venv = bin_dir.parent.resolve()
    assert all(Path(p).resolve().is_relative_to(venv) for p in out[:2]), out
    assert int(out[2]) == len(list((ROOT / "devices").glob("*.toml")))


def test_commands_from_outside_the_checkout(installed):
    py, bin_dir, work, _ = installed
    env = _env(bin_dir)
    devices = _run([bin_dir / "analogmem", "devices"], work, env).stdout
    assert all(p.stem in devices for p in (ROOT / "devices").glob("*.toml"))
    cells = _run([bin_dir / "analogmem", "cells", "--cells", "2000", "--quiet", "--out", work / "cells"], work, env)
    assert (work / "cells" / "demo.json").is_file() and (work / "cells" / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert "symbol error rate" in cells.stdout


def test_bench_round_trip_from_outside_the_checkout(installed):
    py, bin_dir, work, _ = installed
    env = _env(bin_dir)
    port_file = work / "port"
    server = subprocess.Popen([bin_dir / "analogmem", "bench", "serve", "--device", "pcm-nandakumar2019", "--port", "0",
                               "--rows", "8", "--cols", "8", "--port-file", port_file, "--max-seconds", "120"],
                              cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.1)
        assert port_file.exists(), server.communicate(timeout=5)
        resource = f"TCPIP0::127.0.0.1::{port_file.read_text().strip()}::SOCKET"
        common = ["--resource", resource, "--rows", "8", "--cols", "8", "--no-progress"]
        prog = _run([bin_dir / "analogmem", "bench", "program", *common, "--device", "pcm-nandakumar2019",
                     "--cells", "0-31", "--out", work / "p.csv"], work, env)
        assert "programmed 32 cells" in prog.stdout
        _run([bin_dir / "analogmem", "bench", "read", *common, "--cells", "0-31", "--out", work / "r.csv"], work, env)
        rows = (work / "r.csv").read_text().splitlines()
        assert len(rows) == 33 and rows[1].endswith(",pcm-nandakumar2019")
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_program_model_from_outside_the_checkout(installed):
    py, bin_dir, work, _ = installed
    out = _run([py, "-c", "import torch, analogmem\n"
                          "m = torch.nn.Linear(16, 4)\n"
                          "am = analogmem.program_model(m, 'rram-wan2022', cells_per_weight=2, seed=0)\n"
                          "r = am.module_at(86400.0)\n"
                          "err = float((r.weight - m.weight).abs().mean() / m.weight.abs().mean())\n"
                          "print(am.usage()['cells_per_weight'], err)"], work, _env(bin_dir)).stdout.split()
    assert float(out[0]) == 2.0 and 0.0 < float(out[1]) < 0.5  # read back with noise, close to the weights


def test_wheel_metadata_license_and_stripped_extensions(installed):
    wheel = installed[3]
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        assert re.search(r"^License-Expression: BSD-3-Clause$", meta, re.M), meta[:800]
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
        assert not any(n.endswith("keithley2450.yaml") for n in names)  # a test fixture, not shipped
        sos = [n for n in names if n.endswith(".so")]
        # the kernels, their test hooks (analogmem.emulator._testing: the shipped tests use them) and the codec
        assert sorted(n.rsplit("/", 1)[-1].split(".")[0] for n in sos) == ["_codec", "_kernels", "_testing"]
        assert any(n == "analogmem/emulator/_kernels.pyi" for n in names)  # the extensions' type stubs
        assert sorted(n for n in names if n.startswith("analogmem/devices/") and
                                        n.endswith(".toml")) == sorted(f"analogmem/devices/{p.name}"
                                                                       for p in (ROOT / "devices").glob("*.toml"))
        readelf = shutil.which("readelf")
        if readelf is None:
            pytest.skip("no readelf to inspect the extension modules")
        tmp = wheel.parent / "so"
        for n in sos:
            z.extract(n, tmp)
            sections = _run([readelf, "-S", "-W", tmp / n], tmp).stdout
            assert ".symtab" not in sections and ".debug_info" not in sections, f"{n} is not stripped"


def test_sdist_ships_the_tests_with_their_helpers(tmp_path):
    _run([sys.executable, "setup.py", "-q", "sdist", "-d", tmp_path], ROOT, timeout=300)
    (sdist,) = tmp_path.glob("analogmem-*.tar.gz")
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    tests = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("*") if p.is_file()
             and "__pycache__" not in p.parts}
    assert tests <= names, sorted(tests - names)[:10]
    assert {"LICENSE", "tests/conftest.py", "tests/stats_helpers.py", "ext/_kernels.pyx"} <= names
    assert not any(n.endswith((".pyc", ".so")) for n in names)


def test_a_checkout_that_shadows_the_wheel_still_finds_its_cards(installed):
    """From the repository root ``import analogmem`` is the source tree (as for any package),
    which has no ``analogmem.devices`` package; the cards come from its ``devices/``."""
    py, bin_dir, _, _ = installed
    out = _run([py, "-c", "import analogmem; print(analogmem.__file__); print(analogmem.load_device('rram-radar').name)"],
               ROOT, _env(bin_dir)).stdout.split()
    assert Path(out[0]).resolve().is_relative_to(ROOT.resolve()) and out[1] == "rram-radar"
