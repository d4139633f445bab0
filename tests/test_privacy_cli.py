"""The ``analogmem privacy`` subcommands (wired through ``add_subparser``)."""

from __future__ import annotations

import argparse
import json

import pytest

from analogmem.privacy.cli import add_subparser


def parse(argv):
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_rrsc_command_writes_table_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = parse(["privacy", "rrsc", "--sweep", "b-eq-eps", "--d", "256", "--n", "300", "--runs", "3",
                  "--methods", "rrsc", "privunitg", "--json", str(out), "--plot", str(png), "--seed", "4",
                  "--no-progress"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "| b | ε |" in text and "rrsc_formula_in_ci95" in text
    data = json.loads(out.read_text())
    assert data["settings"]["seed"] == 4 and "mse" in data["units"]
    point = data["points"][0]
    assert {"bits", "epsilon_nats", "rrsc_mse", "rrsc_mse_formula", "privunitg_mse"} <= set(point)
    assert "sqkr_mse" not in point and len(point["rrsc_mse"]["runs"]) == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # same seed, same numbers
    args2 = parse(["privacy", "rrsc", "--sweep", "b-eq-eps", "--d", "256", "--n", "300", "--runs", "3",
                   "--methods", "rrsc", "privunitg", "--json", str(tmp_path / "r2.json"), "--seed", "4",
                   "--no-progress"])
    args2.func(args2)
    assert json.loads((tmp_path / "r2.json").read_text())["points"] == data["points"]


def test_noisy_compress_command(tmp_path, capsys):
    out, png = tmp_path / "n.json", tmp_path / "n.png"
    args = parse(["privacy", "noisy-compress", "--noise-std", "0.3", "--epochs", "2", "--json", str(out),
                  "--plot", str(png), "--no-progress"])
    assert args.func(args) == 0
    assert "noisy+gaussian-rd" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert "rate_bpp" in data["units"] and len(data["rows"]) == 4
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_subcommand_is_required():
    with pytest.raises(SystemExit):
        parse(["privacy"])
