"""The offline demo models (texts every Python carries, byte tokens, cached checkpoints) and the
``analogmem deltazip`` command (table, JSON with units, PNG, packed files of the stated size)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from analogmem.deltazip import DeltaZipError, calibration_ids, corpus, demo_models, lm_loss
from analogmem.deltazip.cli import add_subparser
from analogmem.deltazip.lm import split_corpus

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    """The tiny demo pair (2 blocks, d = 32), trained on first use and cached in cache_dir()."""
    return demo_models("tiny", progress=False)


def parse(argv):
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_texts_are_offline_deterministic_and_different():
    a, b = corpus("pydoc-topics"), corpus("stdlib-docstrings")
    assert len(a) > 300_000 and len(b) > 300_000 and a[:1000] != b[:1000]
    assert corpus("stdlib-docstrings") == b
    train, held = split_corpus(b, 0.1)
    assert train + held == b and abs(len(held) - 0.1 * len(b)) <= 1
    ids = calibration_ids(train, 5, 32, seed=3)
    assert ids.shape == (5, 32) and ids.dtype == torch.int64 and int(ids.max()) < 256
    assert torch.equal(ids, calibration_ids(train, 5, 32, seed=3))
    assert not torch.equal(ids, calibration_ids(train, 5, 32, seed=4))
    with pytest.raises(DeltaZipError, match="unknown corpus"):
        corpus("wikitext")


def test_demo_pair_is_cached_and_the_finetune_helps_on_held_out_text(tiny):
    again = demo_models("tiny", progress=False)
    assert again.info["trained_now"] == [] and again.finetuned_dir == tiny.finetuned_dir
    assert (tiny.finetuned_dir / "config.json").is_file()
    for a, b in zip(tiny.finetuned.parameters(), again.finetuned.parameters()):
        assert torch.equal(a, b)
    ft = lm_loss(tiny.finetuned, tiny.heldout, seq_len=tiny.spec.ctx)
    base = lm_loss(tiny.base, tiny.heldout, seq_len=tiny.spec.ctx)
    assert ft < base < 3.5  # nats per byte; uniform guessing is ln 256 = 5.5
    # only the transformer blocks were finetuned: the embeddings are the base model's
    assert torch.equal(tiny.finetuned.transformer.wte.weight, tiny.base.transformer.wte.weight)


def test_deltazip_command_writes_table_json_plot_and_packed_files(tiny, tmp_path, capsys):
    out, png, files = tmp_path / "d.json", tmp_path / "d.png", tmp_path / "deltas"
    args = parse(["deltazip", "--preset", "tiny", "--calibration", "8", "--times", "1", "31536000",
                  "--json", str(out), "--plot", str(png), "--out", str(files), "--no-progress"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "| gptzip |" in text and "| magnitude-rtn |" in text and "| bitdelta |" in text
    assert "pcm-nandakumar2019" in text
    data = json.loads(out.read_text())
    assert data["settings"]["sparsity"] == 0.95 and data["settings"]["bits"] == 2
    assert {"heldout_loss_nats", "file_bytes", "ratio_vs_fp16_delta"} <= set(data["units"])
    rows = {r["model"]: r for r in data["rows"]}
    assert set(rows) == {"finetuned", "base", "gptzip", "magnitude-rtn", "bitdelta"}
    for m in ("gptzip", "magnitude-rtn", "bitdelta"):
        assert (files / f"{m}.amdelta").stat().st_size == rows[m]["file_bytes"]
        assert rows[m]["ratio_vs_fp16_delta"] == pytest.approx(rows[m]["fp16_delta_bytes"] / rows[m]["file_bytes"])
    assert abs(rows["gptzip"]["file_bytes"] - rows["magnitude-rtn"]["file_bytes"]) < 0.05 * rows["gptzip"]["file_bytes"]
    assert rows["bitdelta"]["bits_per_weight"] == pytest.approx(1.0, abs=0.01)
    assert [r["t_s"] for r in data["store_rows"]] == [1.0, 31536000.0]
    assert data["store_rows"][0]["code_error_rate"] == 0.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_reports_bad_settings(capsys):
    args = parse(["deltazip", "--preset", "tiny", "--sparsity", "1.5", "--methods", "magnitude-rtn",
                  "--store-card", "none", "--no-progress"])
    assert args.func(args) == 2
    assert "DeltaZipError: sparsity must be a fraction in [0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(["deltazip", "--methods", "zip"])
