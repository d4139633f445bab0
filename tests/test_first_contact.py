"""What a new user meets first (issue 26): the library leaves matplotlib's backend alone, a
missing extra or an unusable card is one line naming what to do, ``bench serve`` needs no
instrument drivers, the bundled cards resolve from a bare source tree, and the measured data
sets are found through one documented variable, ``ANALOGMEM_DATA``."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import analogmem
from analogmem._data import DATA_ENV, DataNotFoundError, data_path, missing_data_hint
from analogmem.errors import DeviceCardError

ROOT = Path(__file__).resolve().parents[1]

#: Python prelude for a subprocess in which the named top-level modules cannot be imported,
#: as on an install without the extra that provides them.
BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in BLOCKED or name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, _Block())
""")


def run_py(code: str, blocked: tuple[str, ...] = (), env: dict[str, str] | None = None,
           cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    prelude = f"BLOCKED = {set(blocked)!r}\n" + BLOCK if blocked else ""
    full_env = {k: v for k, v in os.environ.items() if k != DATA_ENV} | (env or {})
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or ROOT)


# ---------------------------------------------------------------- matplotlib
def test_no_library_module_switches_the_backend_or_uses_pyplot():
    """Only a program's entry point may choose a backend: no module of the package calls
    ``matplotlib.use`` or imports ``matplotlib.pyplot`` (figures are ``Figure`` objects)."""
    offenders = []
    for path in (ROOT / "analogmem").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "use" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "matplotlib":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} matplotlib.use")
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [f"{node.module}.{a.name}" for a in node.names] + [node.module or ""]
                     if isinstance(node, ast.ImportFrom) else [])
            if any(n == "matplotlib.pyplot" for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports pyplot")
    assert not offenders, offenders


def test_plotting_keeps_the_users_backend(tmp_path):
    """A user who chose a backend keeps it after analogmem has written its PNGs."""
    png = tmp_path / "map.png"
    r = run_py(f"""
        import matplotlib
        matplotlib.use("svg")
        import numpy as np
        from analogmem.instrument.cli import _plot_map
        _plot_map(np.arange(16), np.linspace(1e-6, 2e-5, 16), 4, 4, {str(png)!r})
        print(matplotlib.get_backend())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().lower() == "svg"
    assert png.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------- extras and cards
@pytest.mark.parametrize("argv, blocked, extra", [
    (["demo"], ("torch",), "ml"),
    (["fl", "fedpm"], ("flwr",), "fl"),
    (["bench", "read", "--resource", "TCPIP::127.0.0.1::9::SOCKET", "--out", "x.csv"], ("pymeasure",), "instrument"),
])
def test_a_missing_extra_is_one_line_naming_it(argv, blocked, extra, tmp_path):
    r = run_py(f"import sys\nfrom analogmem.cli import main\nsys.exit(main({argv!r}))", blocked=blocked, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"pip install 'analogmem[{extra}]'" in lines[0] and repr(blocked[0]) in lines[0]


def test_bench_serve_runs_without_the_instrument_drivers(tmp_path):
    """The server side of ``bench serve`` drives no instrument: no pymeasure, no PyVISA."""
    r = run_py("""
        import sys
        from analogmem.cli import main
        rc = main(["bench", "serve", "--device", "pcm-nandakumar2019", "--port", "0", "--max-seconds", "0.3"])
        assert "pymeasure" not in sys.modules and "pyvisa" not in sys.modules
        sys.exit(rc)
    """, blocked=("pymeasure", "pyvisa", "pyvisa_py"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "SCPI emulator" in r.stdout and "pcm-nandakumar2019" in r.stdout and "served:" in r.stdout


def test_an_empirical_card_is_refused_in_one_line_before_any_training(tmp_path, capsys):
    from analogmem.cli import main
    from analogmem.storage.encoders import ReadChannel

    with pytest.raises(DeviceCardError, match="empirical.*pcm-nandakumar2019"):
        ReadChannel(analogmem.load_device("pcm-stanford"), 86400.0)
    assert main(["demo", "--device", "pcm-stanford", "--json", str(tmp_path / "s.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DeviceCardError" in err[0] and "pcm-stanford" in err[0]
    assert not list(tmp_path.iterdir())


def test_bundled_cards_resolve_from_a_bare_source_tree():
    """Imported from the repository root with no ``analogmem.devices`` package (as after a
    non-editable install, where the checkout shadows the wheel), the cards come from
    ``devices/``."""
    r = run_py("""
        import analogmem
        print(",".join(analogmem.bundled_devices()))
        print(analogmem.load_device("rram-radar").name)
    """, blocked=("analogmem.devices",))
    assert r.returncode == 0, r.stderr
    names, radar = r.stdout.split()
    assert set(names.split(",")) == {p.stem for p in (ROOT / "devices").glob("*.toml")}
    assert radar == "rram-radar"


def test_level_targets_of_a_write_verify_card_program_into_their_levels():
    card = analogmem.load_device("rram-radar")
    targets = card.level_targets_S
    pr = card.write_verify
    assert targets.shape == (pr.n_levels,)
    assert np.all(targets >= np.array(pr.window_lo_S)) and np.all(targets <= np.minimum(pr.window_hi_S, card.g_max_S))
    bench = analogmem.EmulatedBench(card, 64 * pr.n_levels, seed=3)
    report = bench.program(np.repeat(targets, 64), verify=analogmem.WriteVerify.card())
    # the card's data verify >= 90 % of cells of every level within its budget (scripts/cards/README)
    assert np.mean(report.success) > 0.9
    with pytest.raises(DeviceCardError, match="no \\[write_verify\\]"):
        analogmem.load_device("pcm-nandakumar2019").level_targets_S


# ---------------------------------------------------------------- measured data
def test_data_path_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DataNotFoundError, match=f"{DATA_ENV} is not set.*rzarcone/CAEs.*akashlevy/RRAM-RADAR"):
        data_path("pcm-stanford", "partial_reset_pcm.csv")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(DataNotFoundError, match="must hold pcm-stanford/.*Partial_Reset_PCM.pkl"):
        data_path("pcm-stanford", "partial_reset_pcm.csv")
    (tmp_path / "pcm-stanford").mkdir()
    (tmp_path / "pcm-stanford" / "partial_reset_pcm.csv").write_text("write_voltage_V,read_resistance_ohm\n")
    assert data_path("pcm-stanford", "partial_reset_pcm.csv").is_file()
    assert missing_data_hint("/x/my-own/table.csv") == ""


@pytest.mark.parametrize("argv", [
    ["-m", "analogmem", "calibrate", "/pcm-stanford/partial_reset_pcm.csv", "--out", "c.toml"],
    ["-m", "scripts.cards.convert_stanford_pcm", "/pcm-stanford/partial_reset_pcm.csv", "t.csv"],
    ["-m", "scripts.cards.convert_radar", "/rram-radar", "out"],
])
def test_a_documented_data_command_without_the_data_is_one_line_naming_the_variable(argv, tmp_path):
    """The docs' commands read ``"$ANALOGMEM_DATA/..."``; unset, the shell makes that
    ``/pcm-stanford/...``, and the command says what to set instead of a traceback."""
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV} | {"PYTHONPATH": str(ROOT)}  # for scripts.cards
    r = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{DATA_ENV} is not set" in lines[0], lines[0]
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- help texts
def _parsers(parser, path=()):
    """Every (path, parser) of the command line, sub-commands of sub-commands included."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def full_parser():
    """``analogmem``'s parser with every command's full parser in it (``main`` imports only the
    command it runs)."""
    from analogmem.cli import build_parser

    return build_parser(None)


def test_every_command_has_a_plain_text_description():
    """``--help`` of every command and sub-command says what it does, without reStructuredText
    markup or notes meant for programmers (issue 26)."""
    texts = {path: (p.description or "", p.format_help()) for path, p in _parsers(full_parser())}
    assert {("demo",), ("store",), ("bench", "read"), ("fl", "signsgd-klms"), ("deltazip",)} <= set(texts)
    for path, (description, text) in texts.items():
        where = " ".join(path) or "(top level)"
        assert description.strip(), f"analogmem {where} --help has no description"
        for bad in (":class:", ":func:", ":mod:", ":meth:", "``", "add_subparser", "DESIGN §"):
            assert bad not in text, f"analogmem {where} --help shows {bad!r}"


def test_a_checkout_without_built_kernels_says_it_shadows_the_installed_package():
    """After ``pip install .`` a Python started in the checkout imports the checkout, whose
    kernels are not built: the error says so and what to do, not just "install the package"."""
    r = run_py("import analogmem", blocked=("analogmem.emulator._kernels",))
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "KernelUnavailableError" in last and "source checkout" in last and "pip install -e ." in last, last
