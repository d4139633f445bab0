"""Models, data, the checkpoint cache and the main job (thesis ch.3) on a reduced setting."""

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


def _run_reduced(tmp_path, monkeypatch, extra=()):
    monkeypatch.setenv("ANALOGMEM_CACHE_DIR", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    store_resnet.add_subparser(parser.add_subparsers())
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    args = parser.parse_args(["store", "--dataset", "digits", "--depth", "8", "--epochs", "2", "--quiet", "--no-ray",
                              "--budgets", "1,2", "--chips", "2", "--times", "86400,31536000",
                              "--cells-per-weight", "2", "--panel-times", "1,86400,31536000",
                              "--sparsities", "0,0.5", "--encoders", "adaptive,differential-mmse",
                              "--n-selection", "150", "--n-test", "150", "--json", str(out_json),
                              "--plot", str(out_png), *extra])
    assert args.func(args) == 0
    return json.loads(out_json.read_text()), out_png


def test_store_job_end_to_end_reduced(tmp_path, monkeypatch, capsys):
    """The ch.3 job on 8×8 digits with a ResNet-8, 2 chips, 1 and 2 cells per weight: the JSON
    has, per approach and budget, the configuration, its cells per weight, the accuracy of
    every chip and their mean with a bootstrap percentile interval (within the chips' range, so
    within [0, 1]) at each time; the printed table's columns line up; digital + ECC uses at
    most the budget and the analog rows exactly it (joint: at most); the PNG is written."""
    res, png = _run_reduced(tmp_path, monkeypatch)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "_provenance" in json.dumps(res) or "provenance" in res
    assert res["budgets_cells_per_weight"] == [1, 2] and res["chips"]["n"] == 2 and res["chips"]["runner"] == "serial"
    hl = res["headline"]
    assert hl["times_s"] == [86400.0, 31536000.0] and hl["time_labels"] == ["1 day", "1 year"]
    assert set(hl["approaches"]) == {"naive", "robust", "joint", "digital", "digital-pruned"}
    for approach, v in hl["approaches"].items():
        assert [r["budget_cells_per_weight"] for r in v["budgets"]] == [1, 2]
        for r in v["budgets"]:
            B = r["budget_cells_per_weight"]
            if approach in ("naive", "robust"):
                assert r["cells_per_weight"] == pytest.approx(B, abs=1e-12)  # equal cells: exactly the budget
            else:
                assert 0 < r["cells_per_weight"] <= B  # never more than the budget (digital: its actual cells)
            assert r["cells_per_weight_with_side_bits"] == pytest.approx(r["cells_per_weight"]
                                                                         + r["side_bits_per_weight"])
            assert isinstance(r["configuration"], str) and r["encoder"]["kind"]
            for b, t in zip(r["by_time"], hl["times_s"]):
                assert b["t_s"] == t and len(b["accuracy_per_chip"]) == 2
                assert 0 <= min(b["accuracy_per_chip"]) <= b["accuracy_mean"] <= max(b["accuracy_per_chip"]) <= 1
                assert (min(b["accuracy_per_chip"]) <= b["accuracy_ci95_low"] <= b["accuracy_mean"]
                        <= b["accuracy_ci95_high"] <= max(b["accuracy_per_chip"]))
        assert set(v["fewest_cells_per_weight_within_tolerance"]) == {"1 day", "1 year"}
    digital = {r["budget_cells_per_weight"]: r["encoder"] for r in hl["approaches"]["digital"]["budgets"]}
    assert all(e["kind"] == "DigitalECC" for e in digital.values())
    for lab in ("1 day", "1 year"):
        assert set(hl["fewest_cells_per_weight"][lab]) == {"cells_only", "cells_plus_side_bits",
                                                           "digital_pruned_cells_plus_side_bits"}
    panel = res["time_panel"]
    assert panel["budget_cells_per_weight"] == 2 and panel["times_s"] == [1.0, 86400.0, 31536000.0]
    assert [r["approach"] for r in panel["rows"]] == list(hl["approaches"])
    assert all(len(r["by_time"]) == 3 for r in panel["rows"])
    chosen = {c["plan"] for c in res["selection"]["candidates"] if c.get("selection_accuracy") is not None}
    assert {r["plan"] for v in hl["approaches"].values() for r in v["budgets"] if "naive" not in r["plan"]} <= chosen
    out = capsys.readouterr().out
    assert "digital / best analog" in out and "accuracy against time" in out
    rows = [ln for ln in out.splitlines() if ln.split(" ")[0] in hl["approaches"] or ln.startswith("approach ")]
    head = [ln for ln in rows if ln.startswith("approach ")]
    assert len(head) == 3 and len({len(h) for h in head[:2]}) == 1
    sweep = [ln for ln in rows if ln.startswith(("approach", *hl["approaches"]))][: 2 * (1 + len(hl["approaches"]))]
    assert len({len(ln.rstrip()) for ln in sweep}) == 1, sweep  # "digital-pruned" included
    # the fewest cells per weight within 1 point, and digital / best analog, follow from the rows
    clean, tol = res["clean_test_accuracy"], res["tolerance"]
    for i, lab in enumerate(hl["time_labels"]):
        fewest = {}
        for a, v in hl["approaches"].items():
            ok = [r["cells_per_weight"] for r in v["budgets"] if r["by_time"][i]["accuracy_mean"] >= clean - tol]
            fewest[a] = min(ok) if ok else None
            assert v["fewest_cells_per_weight_within_tolerance"][lab] == fewest[a]
        analog = [fewest[a] for a in ("naive", "robust", "joint") if fewest[a]]
        want = fewest["digital"] / min(analog) if analog and fewest["digital"] else None
        assert hl["fewest_cells_per_weight"][lab]["cells_only"]["digital_over_best_analog"] == want
    # the per-card markdown table (docs/storage.md) from the JSON file, through the command line
    table = store_resnet.card_table([res], "1 day").splitlines()
    assert len(table) == 3 and table[2].startswith(f"| {res['device']} | {100 * clean:.1f} |")
    assert table[2].count("|") == table[0].count("|")  # no cell breaks the columns
    parser = argparse.ArgumentParser()
    store_resnet.add_subparser(parser.add_subparsers())
    args = parser.parse_args(["store", "--table", str(tmp_path / "r.json")])
    assert args.func(args) == 0
    assert "\n".join(table) in capsys.readouterr().out


def test_store_job_refuses_bad_settings_before_any_work(tmp_path, monkeypatch):
    from analogmem.jobs.store_resnet import StoreJobError, run_store_job

    monkeypatch.setenv("ANALOGMEM_CACHE_DIR", str(tmp_path / "cache"))
    for kwargs, what in (({"budgets": [1.5]}, "budgets"), ({"n_chips": 0}, "chips"),
                         ({"sparsities": [1.0]}, "sparsities"), ({"encoders": ["nope"]}, "nope"),
                         ({"times_s": [-1.0]}, "times")):
        with pytest.raises(StoreJobError, match=what):
            run_store_job(dataset="digits", depth=8, progress=False, **kwargs)
    assert not (tmp_path / "cache").exists()  # nothing was trained
