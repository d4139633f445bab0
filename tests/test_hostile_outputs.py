"""Command-line paths under a hostile user (issue 25, items 3, 14, 17, 28): an output that
is an input or another output, an output that cannot be written, an input that is not a
file. Every case is refused before any work with one line (``PathError``, exit status 2)
and leaves every file as it was and no new one."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from analogmem import AnalogMemError, PathError
from analogmem._io import check_paths
from analogmem.cli import main

TABLE = "target_S,read_value_S\n" + "".join(f"{t}e-6,{t * 1.01}e-6\n" for t in (1, 2, 3) for _ in range(30))


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its sha256: "nothing changed" means these are equal."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text(TABLE)
    (tmp_path / "t.csv").write_text("cell,target_S\n0,1e-6\n")
    (tmp_path / "card.toml").write_text("# not a card, but someone's file\n")
    return tmp_path


CASES = [
    (["calibrate", "data.csv", "--out", "data.csv"], r"--out 'data.csv' is the input data"),
    (["calibrate", "data.csv", "--out", "new.toml", "--json", "data.csv"], r"--json 'data.csv' is the input data"),
    (["calibrate", "data.csv", "--out", "new.toml", "--plot", "./sub/../data.csv"], r"is the input data"),
    (["calibrate", "data.csv", "--out", "same.toml", "--json", "same.toml"], r"--json and --out are the same file"),
    (["calibrate", "data.csv", "--out", "x.toml", "--model", "write-verify", "--plot", "x.toml"],
     r"--plot and --out are the same file"),
    (["calibrate", "data.csv", "--out", "link.toml"], r"--out 'link.toml' is the input data"),  # a symbolic link
    (["calibrate", "data.csv", "--out", "hard.csv"], r"--out 'hard.csv' is the input data"),  # a hard link
    (["calibrate", "data.csv", "--out", "/proc/nope/card.toml"], r"--out '/proc/nope/card.toml' cannot be written"),
    (["calibrate", "data.csv", "--out", "card.toml/x.toml"], r"card\.toml' is a file, not a folder"),
    (["calibrate", "data.csv", "--out", "."], r"--out '.' is a folder, not a file"),
    (["calibrate", "data.csv", "--out", ""], r"--out is empty"),
    (["calibrate", "/dev/zero", "--out", "z.toml"], r"data '/dev/zero' is not a regular file"),
    (["calibrate", "missing.csv", "--out", "z.toml"], r"data 'missing.csv' does not exist"),
    (["bench", "program", "--resource", "TCPIP::127.0.0.1::1::SOCKET", "--targets-csv", "t.csv", "--out", "t.csv"],
     r"--out 't.csv' is the input --targets-csv"),
    (["bench", "program", "--resource", "X", "--out", "p.csv", "--json", "p.csv"], r"same file"),
    (["bench", "read", "--resource", "X", "--out", "/proc/nope/r.csv"], r"cannot be written"),
    (["cells", "--cells", "10000000", "--json", "/proc/nope/x.json"], r"--json '/proc/nope/x.json' cannot be written"),
    (["cells", "--cells", "1000", "--out", "card.toml"], r"--out 'card.toml' is not a folder"),
    (["cells", "--cells", "1000", "--out", "res", "--plot", "res/demo.json"], r"same file"),
    (["prune", "laplacian", "--json", "/proc/nope/x.json"], r"cannot be written"),
    (["store", "--sweep", "--json", "/proc/nope/x.json"], r"--json '/proc/nope/x.json' cannot be written"),
    (["demo", "--plot", "/proc/nope/x.png"], r"--plot '/proc/nope/x.png' cannot be written"),
    (["store", "--checkpoint", "/missing.pt"], r"--checkpoint '/missing.pt' does not exist"),
    (["store", "--table", "{}"], r"--table '\{\}' does not exist"),
    (["store", "--json", "data.csv", "--table", "data.csv"], r"is the input --table"),
    (["devices", "--json", "/proc/nope/d.json"], r"cannot be written"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_a_bad_path_is_refused_before_any_work_and_nothing_changes(work, capsys, argv, message):
    os.symlink("data.csv", work / "link.toml")
    os.link(work / "data.csv", work / "hard.csv")
    before = tree(work)
    t0 = time.perf_counter()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PathError" in err, err  # one line, no traceback
    assert __import__("re").search(message, err), err
    assert time.perf_counter() - t0 < 5.0  # refused before the work (10⁷ cells would take many seconds)
    assert tree(work) == before
    assert sorted(os.listdir(work)) == sorted(["data.csv", "t.csv", "card.toml", "link.toml", "hard.csv"])


def test_an_unwritable_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes anywhere a mode allows: use a read-only place instead
        target = "/proc/self/x.json"
    else:
        ro.chmod(0o500)
        target = str(ro / "x.json")
    with pytest.raises(PathError, match="cannot be written"):
        check_paths(outputs={"--json": target})


def test_good_paths_pass_and_make_nothing(tmp_path):
    (tmp_path / "in.csv").write_text("x")
    before = tree(tmp_path)
    check_paths(files={"data": tmp_path / "in.csv"}, inputs={"--device": "pcm-nandakumar2019"},
                outputs={"--out": tmp_path / "new" / "deeper" / "card.toml", "--json": tmp_path / "r.json",
                         "--plot": None}, folders={"--dir": tmp_path / "made-later"})
    assert tree(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["in.csv"]


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
    import analogmem.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    parser = cli.build_parser("devices")
    monkeypatch.setattr(cli, "build_parser", lambda command=None: parser)
    parser._subparsers._group_actions[0].choices["devices"].set_defaults(func=interrupted)
    assert main(["devices"]) == 130
    assert capsys.readouterr().err == "analogmem devices: interrupted (Ctrl-C)\n"


@pytest.mark.parametrize("argv, message", [
    (["cells", "--levels", "10000", "--cells", "1000"], r"--levels \(levels\) must be an integer >= 2 and <= 500"),
    (["cells", "--levels", "1", "--cells", "1000"], r"--levels \(levels\) must be an integer >= 2"),
    (["cells", "--cells", "0"], r"--cells \(n_cells\) must be an integer >= 4"),
    (["cells", "--seed", "-1", "--cells", "100"], r"--seed must be an integer >= 0, got -1"),
])
def test_nonsense_sizes_and_seeds_are_refused_at_once(work, capsys, argv, message):
    before = tree(work)
    t0 = time.perf_counter()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err) and err.count("\n") == 1, err
    assert time.perf_counter() - t0 < 5.0 and tree(work) == before and not (work / "results").exists()


# ---------------------------------------------------------------- every command, bad input
#: One bad value per command and sub-command, each accepted by argparse and refused by the
#: command's own checks before any work, with the message expected on the one line. Every
#: refused input exits with status 2, bench commands too (``analogmem._cli_output``: 1 is
#: for a run that started and failed, such as an instrument that stopped answering).
BAD_VALUES = [
    (["demo", "--chips", "0"], 2, r"StoreJobError: --chips must be >= 1"),
    (["store", "--budgets", "0"], 2, r"StoreJobError: budgets must be whole numbers"),
    (["cells", "--levels", "1", "--cells", "100"], 2, r"SettingError: --levels \(levels\) must be an integer >= 2"),
    (["calibrate", "missing.csv", "--out", "z.toml"], 2, r"PathError: data 'missing.csv' does not exist"),
    (["devices", "--json", "/proc/nope/d.json"], 2, r"PathError: --json '/proc/nope/d.json' cannot be written"),
    (["bench", "read", "--resource", "X", "--out", "r.csv", "--rows", "0"], 2,
     r"SettingError: --rows must be an integer >= 1"),
    (["bench", "program", "--resource", "X", "--out", "p.csv", "--rows", "0", "--levels", "4"], 2,
     r"SettingError: --rows must be an integer >= 1"),
    (["bench", "characterise", "--resource", "X", "--out", "c.csv", "--rows", "0"], 2,
     r"SettingError: --rows must be an integer"),
    (["bench", "plan", "--device", "rram-wan2022", "--out", "plan.csv", "--rows", "0"], 2,
     r"SettingError: --rows must be an integer"),
    (["bench", "serve", "--rows", "0"], 2, r"SettingError: --rows must be an integer >= 1"),
    (["privacy", "rrsc", "--d", "0"], 2, r"PrivacyParameterError: d must be an integer >= 2"),
    (["privacy", "noisy-compress", "--repeats", "0"], 2, r"PrivacyParameterError: repeats must be >= 1"),
    (["prune", "laplacian", "--n", "4"], 2, r"PruningError: ns must hold sizes >= 16"),
    (["prune", "net", "--sparsity", "1.5"], 2, r"PruningError: sparsities must be distinct fractions in \[0, 1\)"),
    *[(["fl", c, "--clients", "0"], 2, r"FederatedError: n_clients must be an integer >= 1")
      for c in ("fedpm", "klms", "fedavg", "signsgd-klms", "compare")],
    (["dsgd", "--density", "2"], 2, r"DSGDError: density must be a fraction in \(0, 1\]"),
    (["deltazip", "--sparsity", "1.5"], 2, r"DeltaZipError: sparsity must be a fraction in \[0, 1\)"),
]


def _error_names() -> set[str]:
    """Class names of every AnalogMemError subclass imported so far."""
    names, todo = set(), [AnalogMemError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


def _leaf_commands() -> set[tuple[str, ...]]:
    """Every runnable command path (``("bench", "read")``, ``("dsgd",)``, ...), delegated
    commands included."""
    from test_first_contact import _parsers, full_parser

    paths = {path for path, _ in _parsers(full_parser()) if path}
    return {path for path in paths if not any(other[:len(path)] == path and other != path for other in paths)}


def test_every_command_has_a_bad_value_case():
    """A new command without a case here fails, so "every command" stays every command
    (``info`` takes no value to get wrong; its bad input is an unknown option, below)."""
    leaves = _leaf_commands()
    assert {("demo",), ("bench", "read"), ("fl", "compare"), ("deltazip",), ("info",)} <= leaves  # the walk works
    covered = {tuple(argv[:n]) for argv, _, _ in BAD_VALUES for n in (1, 2)}
    missing = leaves - covered - {("info",)}
    assert not missing, f"commands without a BAD_VALUES case: {sorted(missing)}"


@pytest.mark.parametrize("argv, status, message", BAD_VALUES, ids=[" ".join(a)[:50] for a, _, _ in BAD_VALUES])
def test_every_command_refuses_a_bad_value_in_one_line(work, capsys, argv, status, message):
    before = tree(work)
    t0 = time.perf_counter()
    assert main(argv) == status
    out, err = capsys.readouterr()
    cmd = " ".join(argv[:2]) if argv[0] == "bench" else argv[0]
    assert err.count("\n") == 1 and err.startswith(f"analogmem {cmd}: error: ") and "Traceback" not in err, err
    assert __import__("re").search(message, err), err
    # the line names the refusal's class, one of analogmem's errors
    named = err.removeprefix(f"analogmem {cmd}: error: ").split(":")[0]
    assert named in _error_names(), err
    assert time.perf_counter() - t0 < 5.0 and tree(work) == before


@pytest.mark.parametrize("command", ["demo", "store", "cells", "calibrate", "bench", "privacy", "prune", "fl", "dsgd",
                                     "deltazip", "devices", "info"])
def test_an_unknown_option_is_argparses_usage_error_not_a_traceback(work, capsys, command):
    """argparse's own refusal (usage, then one ``error:`` line, status 2) for every command."""
    with pytest.raises(SystemExit) as exc:
        main([command, "--no-such-option"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err, err
    assert __import__("re").fullmatch(r"analogmem( \w+)?: error: (unrecognized arguments: --no-such-option|"
                                      r"the following arguments are required: .+)", err.splitlines()[-1]), err
