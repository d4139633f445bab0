"""Models, data, the checkpoint cache and the main job on a reduced setting."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from analogmem.jobs import store_resnet
from analogmem.ml.datasets import cache_dir, digits
from analogmem.ml.models import count_parameters, pretrained, resnet18, resnet20


def test_resnet_sizes():
    assert count_parameters(resnet20()) == 272_186  # ResNet-20 (He et al.: 0.27 M)
    assert count_parameters(resnet18()) == 11_173_962  # ResNet-18: 11.2 M
    assert resnet20(input_size=28)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert resnet20(input_size=8)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_digits_split_is_fixed_by_seed():
    a, b, c = digits(0), digits(0), digits(1)
    assert torch.equal(a.y_test, b.y_test) and not torch.equal(a.y_test, c.y_test)
    assert a.x_train.shape[1:] == (1, 8, 8)


def test_checkpoint_is_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("ANALOGMEM_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    data = digits(0)
    m1, info1 = pretrained(data, depth=8, epochs=1, progress=False)
    m2, info2 = pretrained(data, depth=8, epochs=1, progress=False)
    assert info1["trained_now"] and not info2["trained_now"]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    m3, info3 = pretrained(data, depth=8, epochs=1, checkpoint=info1["checkpoint"], progress=False)
    assert not info3["trained_now"]
    with pytest.raises(FileNotFoundError):
        pretrained(data, depth=8, checkpoint=tmp_path / "missing.pt", progress=False)


def test_preferred_card_order():
    assert store_resnet.preferred_rram_card() in ("rram-radar", "rram-wan2022")


def test_store_command_end_to_end_reduced(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANALOGMEM_CACHE_DIR", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    store_resnet.add_subparser(parser.add_subparsers())
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    args = parser.parse_args(["store", "--dataset", "digits", "--depth", "8", "--epochs", "2", "--quiet",
                              "--encoders", "naive,differential-mmse,allocated-mmse,digital-ecc",
                              "--times", "1,86400", "--json", str(out_json), "--plot", str(out_png)])
    assert args.func(args) == 0
    res = json.loads(out_json.read_text())
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    assert res["times_s"] == [1.0, 86400.0] and 0.5 < res["clean_test_accuracy"] <= 1
    for r in res["schemes"]:
        assert len(r["accuracy"]) == 2
        if r["scheme"] in ("allocated-mmse", "digital-ecc"):  # at most the budget (allocation leaves
            # zero-sensitivity weights without cells; BCH parity is capped by the code length)
            assert 0 < r["cells_per_weight"] <= 4.0
        else:
            assert r["cells_per_weight"] == pytest.approx(4.0, abs=0.1)
    assert "naive" in capsys.readouterr().out
