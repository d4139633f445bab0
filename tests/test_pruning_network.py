"""SuRP and magnitude pruning of a torch model, iterative pruning with masked retraining,
and a pruned model on an emulated store (thesis ch.2; docs/pruning.md; storage counts = 0 ⇒ no cells)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analogmem.storage.encoders import make_encoder
from analogmem.ml.datasets import digits
from analogmem.pruning import (
    PruningError,
    evaluate,
    iterative_prune,
    magnitude_prune,
    mlp,
    model_sparsity,
    prunable_parameters,
    store_counts,
    surp_decode,
    surp_prune,
    train_model,
)
from analogmem.storage import EmulatedStore, load_model, store_model


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    data = digits(0)
    model = mlp(data.input_shape, data.num_classes, (32, 16), seed=1)
    train_model(model, data.x_train, data.y_train, epochs=8, seed=2)
    return data, model


def test_training_is_deterministic_and_learns(trained):
    data, model = trained
    again = mlp(data.input_shape, data.num_classes, (32, 16), seed=1)
    train_model(again, data.x_train, data.y_train, epochs=8, seed=2)
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)
    assert evaluate(model, data.x_test, data.y_test) > 0.9


def test_surp_and_magnitude_prune_to_the_same_exact_sparsity(trained):
    data, model = trained
    n = sum(p.numel() for _, p in prunable_parameters(model))
    surp, code = surp_prune(model, 0.8, seed=3)
    mag = magnitude_prune(model, 0.8)
    for m in (surp, mag):
        assert model_sparsity(m) == pytest.approx(1 - round(0.2 * n) / n)
    # biases untouched; kept weights keep their sign; the original model is not modified
    for (name, p0), p1 in zip(model.named_parameters(), surp.parameters()):
        if name.endswith("bias"):
            assert torch.equal(p0, p1)
        else:
            kept = p1 != 0
            assert torch.all(torch.sign(p1[kept]) == torch.sign(p0[kept]))
    assert model_sparsity(model) == 0.0
    # the pruned model is exactly what the SuRP bitstream decodes to
    decoded = surp_decode(code.to_bytes(), code.shapes, code.seed_state)
    for (_, p), d in zip(prunable_parameters(surp), decoded):
        np.testing.assert_array_equal(p.detach().numpy(), d.astype(np.float32))


def test_iterative_surp_retrains_with_masked_gradients(trained):
    data, model = trained
    acc = lambda m: evaluate(m, data.x_test, data.y_test)  # noqa: E731
    final, stages = iterative_prune(model, "surp", [0.6, 0.85], x_train=data.x_train, y_train=data.y_train,
                                    evaluate=acc, retrain_epochs=2, seed=4)
    n = sum(p.numel() for _, p in prunable_parameters(model))
    assert [s.sparsity for s in stages] == [0.6, 0.85]
    assert model_sparsity(final) == pytest.approx(1 - round(0.15 * n) / n)
    assert all(s.bits["nonzero"] == round((1 - s.sparsity) * n) for s in stages)
    # retraining recovers accuracy lost by pruning
    assert stages[-1].accuracy_retrained > stages[-1].accuracy_pruned
    assert stages[-1].accuracy_retrained > 0.85
    # masked retraining keeps the pruned weights exactly zero (nested masks across passes)
    once, _ = iterative_prune(model, "surp", [0.6], x_train=data.x_train, y_train=data.y_train, evaluate=acc,
                              retrain_epochs=2, seed=4)
    for (_, p1), (_, p2) in zip(prunable_parameters(once), prunable_parameters(final)):
        assert torch.all(p2[p1 == 0] == 0)
    with pytest.raises(PruningError, match="increasing"):
        iterative_prune(model, "surp", [0.8, 0.5], x_train=data.x_train, y_train=data.y_train, evaluate=acc,
                        retrain_epochs=1)
    with pytest.raises(PruningError, match="unknown pruning method"):
        iterative_prune(model, "random", [0.5], x_train=data.x_train, y_train=data.y_train, evaluate=acc,
                        retrain_epochs=1)


def test_nan_weights_are_named(trained):
    _, model = trained
    import copy

    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad[3].weight[0, 0] = float("nan")
    with pytest.raises(PruningError, match=r"layer '3.weight' has 1 NaN"):
        surp_prune(bad, 0.5, seed=0)
    with pytest.raises(PruningError, match=r"layer '3.weight' has 1 NaN"):
        magnitude_prune(bad, 0.5)


def test_surp_pruned_model_on_an_emulated_store_uses_cells_only_for_kept_weights(trained):
    data, model = trained
    pruned, code = surp_prune(model, 0.6, seed=5)
    counts = store_counts(pruned)
    enc = make_encoder("differential", 2)  # a differential pair: 2 cells per stored weight
    n_params = sum(p.numel() for p in pruned.parameters())
    store = EmulatedStore("rram-wan2022", n_cells=2 * n_params, seed=6)
    handle = store_model(pruned, store, encoder=enc, counts=counts)
    n_bias = sum(p.numel() for name, p in pruned.named_parameters() if name.endswith("bias"))
    assert store.usage()["analog_cells"] == 2 * (code.nonzero + n_bias)  # pruned weights: no cells
    back = load_model(handle, t_s=3600.0)
    for (name, p0), p1 in zip(pruned.named_parameters(), back.parameters()):
        if name.endswith("weight"):
            assert torch.all(p1[p0 == 0] == 0)  # read back as exact zeros
            assert torch.count_nonzero(p1[p0 != 0]) > 0.9 * torch.count_nonzero(p0)
    # RRAM noise costs little accuracy (measured: 0.891 pruned, 0.883 on the chip after 1 h)
    assert evaluate(back, data.x_test, data.y_test) > evaluate(pruned, data.x_test, data.y_test) - 0.05
