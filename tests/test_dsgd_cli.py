"""The ``analogmem dsgd`` command and the training comparison behind it (thesis ch.5).

One short 2-process gloo run of every method (tiny CNN, 8×8 digits, a few steps) through the
command's ``main``; the defaults and input checks without spawning anything.
"""

from __future__ import annotations

import argparse
import json

import pytest

from analogmem.dsgd import DSGDConfig, DSGDError, coordinate_budget
from analogmem.dsgd.cli import add_subparser, main


def parse(argv):
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_dsgd_command_trains_every_method_and_writes_table_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "d.json", tmp_path / "d.png"
    rc = main(["dsgd", "--dataset", "digits", "--width", "4", "--max-steps", "8", "--eval-every", "4",
               "--batch-size", "16", "--density", "0.02", "--r-factor", "3", "--lr", "0.2", "--seed", "3",
               "--json", str(out), "--plot", str(png), "--no-progress", "--timeout", "240"])
    assert rc == 0
    text = capsys.readouterr().out
    for label in ("uncompressed DDP", "top-k + EF", "random-k + EF", "rTop-k + EF (r=3k)"):
        assert f"| {label} |" in text
    data = json.loads(out.read_text())
    assert data["command"] == "analogmem dsgd" and data["backend"] == "gloo" and data["settings"]["seed"] == 3
    assert {"bits", "test_accuracy", "index_bits_log2"} <= set(data["units"]) and "int32" in data["wire_format"]
    runs = {r["method"]: r for r in data["runs"]}
    assert list(runs) == ["dense", "topk", "randk", "rtopk"]
    n = runs["dense"]["n_parameters"]
    k, r = coordinate_budget(n, 0.02, 3.0)  # one bucket: the tiny model fits DDP's first bucket
    for method, run in runs.items():
        assert run["replicas_identical"] and run["max_replica_abs_diff"] == 0.0
        assert run["steps"] == 8 and [h["step"] for h in run["history"]] == [4, 8]
        assert 0.0 <= run["final_test_accuracy"] <= 1.0
        per_step = 32 * n if method == "dense" else 64 * k
        assert run["bits_per_step"] == per_step and run["bits"]["bits_sent"] == 8 * per_step
        assert run["bits_per_rank"] == [8 * per_step] * 2
        assert [h["cumulative_bits"] for h in run["history"]] == [4 * per_step, 8 * per_step]
        assert run["compression_vs_dense"] == pytest.approx(32 * n / per_step)
    assert runs["rtopk"]["k_per_step"] == k and runs["rtopk"]["r_per_step"] == r
    assert runs["topk"]["r_per_step"] == k and runs["randk"]["r_per_step"] == n
    assert runs["rtopk"]["bits"]["index_bits_log2"] == 8 * k * (n - 1).bit_length()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_defaults_are_the_documented_configuration():
    args = parse(["dsgd"])
    assert args.methods == ["dense", "topk", "randk", "rtopk"]
    assert (args.density, args.r_factor, args.world_size, args.dataset) == (0.01, 4.0, 2, "mnist")
    assert (args.epochs, args.batch_size, args.lr, args.momentum) == (5, 32, 0.1, 0.0)
    cfg = DSGDConfig()
    assert (cfg.epochs, cfg.lr, cfg.momentum, cfg.r_factor, cfg.density) == (5, 0.1, 0.0, 4.0, 0.01)


@pytest.mark.parametrize("field, value, match", [
    ("density", 0.0, "density"), ("density", 2.0, "density"), ("r_factor", 0.5, "r_factor"),
    ("methods", ("topk", "topk"), "repeat"), ("methods", ("sparse",), "sparse"), ("world_size", 0, "world_size"),
    ("dataset", "cifar", "cifar"), ("momentum", 1.0, "momentum"), ("backend", "mpi", "mpi"), ("seed", -1, "seed"),
    ("lr", float("inf"), "lr"), ("max_steps", 0, "max_steps"),
])
def test_bad_settings_raise_before_anything_is_spawned(field, value, match):
    with pytest.raises(DSGDError, match=match):
        DSGDConfig(**{field: value}).validate()


def test_cli_rejects_a_bad_density_without_training(capsys):
    assert main(["dsgd", "--density", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("analogmem dsgd: error: DSGDError: ") and "density" in err, err
