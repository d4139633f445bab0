"""Compress the delta between a finetuned causal LM and its base, model by model.

Works on Hugging Face ``transformers`` causal-LM models (OPT, GPT-2, Llama and their relatives)
and on any ``torch.nn.Module`` that keeps its transformer blocks in one ``nn.ModuleList``. The
*compressible* layers are the ``nn.Linear`` and GPT-2 ``Conv1D`` modules inside those blocks
(``Conv1D`` stores its weight transposed, ``(in, out)``; it is compressed in ``(out, in)``
layout and written back transposed). Every other parameter whose delta is not zero
(embeddings, layer norms, biases, an untied ``lm_head``) goes into the file as a float16 delta.

:func:`compress_model_delta` with ``method="gptzip"`` is sequential, as SparseGPT/GPTQ and
GPT-Zip: the calibration token sequences run through the model once to the first block; then,
block by block, the linear layers are taken in the order the forward pass uses them (layers
that read the same input — q/k/v, gate/up — form one group with one Hessian), each group's
Hessian ``H = 2XXᵀ/N`` is collected on the outputs of the layers already compressed, each
layer's delta is compressed by :func:`~analogmem.deltazip.obs.gptzip_layer`, the layer's weight
becomes ``W_base + Δ̂``, and the block's outputs (with all its layers compressed) are the next
block's inputs. ``magnitude-rtn``, ``rtn`` and ``bitdelta`` need no calibration data.
:func:`apply_delta` rebuilds the finetuned model from the base and a :class:`CompressedDelta`,
bit for bit as the sequential run left it.

Everything runs on the device of ``device`` (``"cpu"``, ``"cuda"``, ...); the base model may
stay on the CPU (its weights are moved one layer at a time).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from analogmem._io import progress as progress_bar

from ._validation import DeltaZipError, check_bits, check_finite_tensor, check_positive_int, check_sparsity
from .baselines import SignScaled, bitdelta_layer, magnitude_rtn_layer, rtn_layer
from .obs import GRID_FITS, GRID_KINDS, HessianAccumulator, LayerCompression, gptzip_layer
from .packed import CompressedDelta, DenseTensor, SignTensor, SparseQuantised

__all__ = [
    "METHODS",
    "apply_delta",
    "check_model_pair",
    "compress_model_delta",
    "compressible_layers",
    "decoder_blocks",
    "model_fingerprint",
    "to_record",
]

#: Compression methods: GPT-Zip (OBS joint pruning + quantisation), magnitude pruning +
#: round-to-nearest (the naive baseline), round-to-nearest only, BitDelta.
METHODS = ("gptzip", "magnitude-rtn", "rtn", "bitdelta")


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the inputs it needs are seen."""


def _is_conv1d(module: Any) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and module.weight.ndim == 2


def _is_linear(module: Any) -> bool:
    import torch.nn as nn

    return isinstance(module, nn.Linear) or _is_conv1d(module)


def decoder_blocks(model: Any) -> tuple[str, Any]:
    """The transformer blocks: the ``nn.ModuleList`` (with linear layers in every element) that
    holds the most parameters — ``model.decoder.layers`` (OPT), ``transformer.h`` (GPT-2),
    ``model.layers`` (Llama). Returns ``(name, module_list)``."""
    import torch.nn as nn

    best = None
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if not all(any(_is_linear(m) for m in child.modules()) for child in mod):
            continue
        n = sum(p.numel() for p in mod.parameters())
        if best is None or n > best[2]:
            best = (name, mod, n)
    if best is None:
        raise DeltaZipError(f"{type(model).__name__} has no list of transformer blocks with linear layers "
                            "(an nn.ModuleList whose elements contain nn.Linear or Conv1D)")
    return best[0], best[1]


def compressible_layers(model: Any) -> dict[str, Any]:
    """``{weight parameter name: module}`` of every ``nn.Linear``/``Conv1D`` inside the blocks."""
    prefix, blocks = decoder_blocks(model)
    out = {}
    for i, block in enumerate(blocks):
        for name, mod in block.named_modules():
            if _is_linear(mod):
                out[f"{prefix}.{i}.{name}.weight" if prefix else f"{i}.{name}.weight"] = mod
    return out


def _named_params(model: Any) -> dict[str, Any]:
    return dict(model.named_parameters())


def check_model_pair(base: Any, finetuned: Any) -> list[str]:
    """Check that ``finetuned`` is ``base`` with other weights: the same parameter names
    and shapes, all finite. Returns the parameter names; raises :class:`DeltaZipError` naming
    the missing/extra layer, the mismatched shape or the tensor with NaN/inf."""
    pb, pf = _named_params(base), _named_params(finetuned)
    missing = [n for n in pb if n not in pf]
    extra = [n for n in pf if n not in pb]
    if missing:
        raise DeltaZipError(f"the finetuned model has no parameter {missing[0]!r} (missing {len(missing)} of the "
                            f"base model's {len(pb)}, e.g. {missing[:3]})")
    if extra:
        raise DeltaZipError(f"the finetuned model has parameter {extra[0]!r} that the base model lacks "
                            f"({len(extra)} extra, e.g. {extra[:3]})")
    for n, p in pb.items():
        if tuple(p.shape) != tuple(pf[n].shape):
            raise DeltaZipError(f"layer {n!r}: base shape {tuple(p.shape)} but finetuned shape {tuple(pf[n].shape)}")
    for n in pb:
        check_finite_tensor(f"base model parameter {n!r}", pb[n].detach())
        check_finite_tensor(f"finetuned model parameter {n!r}", pf[n].detach())
    return list(pb)


def model_fingerprint(model: Any) -> str:
    """SHA-256 over every parameter's name, dtype, shape and bytes (identifies the base model)."""
    import torch

    h = hashlib.sha256()
    for n, p in model.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{n}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _as_linear(param: Any, transposed: bool) -> Any:
    """A weight in ``(out, in)`` layout, float32 (float64 stays float64)."""
    import torch

    w = param.detach()
    w = w.to(torch.float64 if w.dtype == torch.float64 else torch.float32)
    return w.T if transposed else w


def to_record(name: str, result: LayerCompression | SignScaled, transposed: bool) -> SparseQuantised | SignTensor:
    """The file record of one compressed layer."""
    if isinstance(result, SignScaled):
        return SignTensor(name, result.positive.cpu().numpy().astype(bool), np.float16(result.alpha), transposed)
    if result.grid is None:
        raise DeltaZipError(f"{name}: unquantised layers (bits=None) cannot go into a delta file; pass bits")
    mask = result.mask.cpu().numpy().astype(bool)
    codes = result.codes[result.mask].cpu().numpy().astype(np.uint8)
    scale = result.grid.scale.cpu().numpy().astype(np.float16)
    zero = result.grid.zero.cpu().numpy().astype(np.float32)
    return SparseQuantised(name, mask, codes, scale, zero, result.grid.bits, result.grid.kind, transposed,
                           result.method)


def _updated_weight(base_param: Any, rec: Any, device: Any) -> Any:
    """``base + Δ̂`` in the parameter's layout, dtype and on ``device`` (float32 addition)."""
    import torch

    d = torch.from_numpy(np.ascontiguousarray(rec.values().T if rec.transposed else rec.values()))
    if tuple(d.shape) != tuple(base_param.shape):
        raise DeltaZipError(f"layer {rec.name!r}: the delta has shape {tuple(d.shape)} but the model's parameter "
                            f"has shape {tuple(base_param.shape)}")
    b = base_param.detach().to(device)
    acc = torch.float64 if b.dtype == torch.float64 else torch.float32
    return (b.to(acc) + d.to(device=device, dtype=acc)).to(b.dtype)


def _dense_records(base: Any, finetuned: Any, skip: set[str]) -> dict[str, DenseTensor]:
    import torch

    pb, out = _named_params(base), {}
    for n, p in finetuned.named_parameters():
        if n in skip:
            continue
        d = p.detach().float().cpu() - pb[n].detach().float().cpu()
        if bool(torch.any(d != 0)):
            out[n] = DenseTensor(n, d.numpy().astype(np.float16))
    return out


def _calibration_batches(calibration: Any, vocab: int | None, batch_size: int) -> list[Any]:
    import torch

    if calibration is None:
        raise DeltaZipError("method 'gptzip' needs calibration token ids, a (n_sequences, seq_len) integer tensor")
    ids = torch.as_tensor(calibration)
    if ids.ndim != 2 or ids.shape[0] == 0 or ids.shape[1] == 0 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise DeltaZipError(f"calibration must be a non-empty (n_sequences, seq_len) integer tensor of token ids, "
                            f"got shape {tuple(ids.shape)} dtype {ids.dtype}")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or (vocab is not None and hi >= vocab):
        raise DeltaZipError(f"calibration token ids must be in [0, {vocab}), got ids in [{lo}, {hi}]")
    return list(ids.long().split(batch_size))


def _capture_block_inputs(model: Any, block: Any, batches: list[Any], device: Any) -> list[tuple[tuple, dict]]:
    import torch

    captured: list[tuple[tuple, dict]] = []

    def catch(_module, args, kwargs):
        captured.append((tuple(args), dict(kwargs)))
        raise _Stop

    handle = block.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        with torch.no_grad():
            for ids in batches:
                try:
                    model(input_ids=ids.to(device), use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    if len(captured) != len(batches):
        raise DeltaZipError("the forward pass never reached the first transformer block")
    return captured


def _hidden(args: tuple, kwargs: dict) -> Any:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, h: Any) -> tuple[tuple, dict]:
    if args:
        return (h,) + tuple(args[1:]), kwargs
    kwargs = dict(kwargs)
    kwargs["hidden_states"] = h
    return args, kwargs


def _run_block(block: Any, args: tuple, kwargs: dict) -> Any:
    out = block(*args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def _layer_groups(block: Any, layers: dict[str, Any], sample: tuple[tuple, dict]) -> list[list[str]]:
    """Linear layers of ``block`` in the order the forward pass calls them, grouped by input."""
    import torch

    calls: list[tuple[str, Any]] = []  # the input tensors stay referenced, so no address is reused
    handles = []
    for name, mod in layers.items():
        def hook(_m, inp, _out, name=name):
            calls.append((name, inp[0]))
        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            _run_block(block, *sample)
    finally:
        for h in handles:
            h.remove()

    def same(a: Any, b: Any) -> bool:
        return a is b or (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride())

    seen, groups, last = set(), [], None
    for name, x in calls:
        if name in seen:
            continue
        seen.add(name)
        if groups and last is not None and same(x, last):
            groups[-1].append(name)
        else:
            groups.append([name])
        last = x
    unused = [n for n in layers if n not in seen]
    if unused:
        raise DeltaZipError(f"layer {unused[0]!r} is never called by its block's forward pass, so its inputs "
                            "cannot be collected")
    return groups


def compress_model_delta(base: Any, finetuned: Any, calibration: Any = None, *, method: str = "gptzip",
                         sparsity: float = 0.95, bits: int = 2, grid: str = "sparse", grid_fit: str = "pruned",
                         blocksize: int = 128,
                         percdamp: float = 0.01, batch_size: int = 8, device: Any = None,
                         progress: bool = True) -> CompressedDelta:
    """Compress ``finetuned − base`` layer by layer.

    Args:
        base, finetuned: two models of the same architecture (``torch.nn.Module``; Hugging Face
            causal LMs or anything with its blocks in an ``nn.ModuleList``); neither is changed.
        calibration: ``(n_sequences, seq_len)`` integer token ids from the finetuning
            distribution (``method="gptzip"`` only).
        method: one of :data:`METHODS`.
        sparsity: fraction of each compressible layer's delta set to zero (gptzip,
            magnitude-rtn), in [0, 1).
        bits: bits per kept weight (1–8).
        grid: ``"sparse"`` or ``"minmax"`` (see :func:`~analogmem.deltazip.obs.fit_grid`).
        grid_fit: ``"pruned"`` or ``"delta"`` (GPT-Zip only; see
            :func:`~analogmem.deltazip.obs.gptzip_layer`).
        blocksize, percdamp: GPT-Zip's column block (128) and damping (0.01 of mean diag H).
        batch_size: calibration sequences per forward pass.
        device: where the work runs (default: the finetuned model's device).
        progress: show tqdm progress bars.

    Returns a :class:`~analogmem.deltazip.packed.CompressedDelta` whose ``meta`` records the
    method, the settings and the base model's SHA-256, and whose ``report["layers"]`` holds
    per-layer statistics (stored weights, relative weight error, OBS loss).
    """
    import torch

    settings = _Settings.checked(method, sparsity, bits, grid, grid_fit, blocksize, percdamp, batch_size)
    check_model_pair(base, finetuned)
    device = torch.device(device) if device is not None else next(finetuned.parameters()).device
    layers_ft = compressible_layers(finetuned)
    compress = _LayerCompressor(settings, device, _named_params(base),
                                {n: _is_conv1d(m) for n, m in layers_ft.items()})
    dense = _dense_records(base, finetuned, set(layers_ft))
    if method != "gptzip":
        records = _compress_each_layer(layers_ft, compress, progress)
    else:
        vocab = getattr(getattr(finetuned, "config", None), "vocab_size", None)
        batches = _calibration_batches(calibration, vocab, settings.batch_size)
        records = _compress_sequentially(finetuned, batches, dense, compress, progress)
    meta = {
        "method": method,
        "settings": settings.meta(int(torch.as_tensor(calibration).numel()) if method == "gptzip" else 0),
        "base_sha256": model_fingerprint(base),
        "architecture": type(finetuned).__name__,
        "n_parameters": int(sum(p.numel() for p in finetuned.parameters())),
    }
    return CompressedDelta(_file_order(finetuned, layers_ft, records, dense), meta, {"layers": compress.stats})


@dataclass(frozen=True)
class _Settings:
    """The compression settings of one run (see :func:`compress_model_delta`)."""

    method: str
    sparsity: float
    bits: int
    grid: str
    grid_fit: str
    blocksize: int
    percdamp: float
    batch_size: int

    @classmethod
    def checked(cls, method: Any, sparsity: Any, bits: Any, grid: Any, grid_fit: Any, blocksize: Any,
                percdamp: Any, batch_size: Any) -> "_Settings":
        """The settings, each checked (:class:`DeltaZipError` naming the value)."""
        if method not in METHODS:
            raise DeltaZipError(f"method must be one of {METHODS}, got {method!r}")
        sparsity = check_sparsity(sparsity)
        bits = check_bits(bits)
        blocksize = check_positive_int(blocksize, "blocksize")
        batch_size = check_positive_int(batch_size, "batch_size")
        if grid not in GRID_KINDS:
            raise DeltaZipError(f"grid must be one of {GRID_KINDS}, got {grid!r}")
        if grid_fit not in GRID_FITS:
            raise DeltaZipError(f"grid_fit must be one of {GRID_FITS}, got {grid_fit!r}")
        return cls(method, sparsity, bits, grid, grid_fit, blocksize, percdamp, batch_size)

    def compress(self, delta: Any, hessian: Any, name: str) -> Any:
        """One layer's delta ``(out, in)`` compressed by :attr:`method` (``hessian`` for GPT-Zip)."""
        if self.method == "bitdelta":
            return bitdelta_layer(delta, name=name)
        if self.method == "rtn":
            return rtn_layer(delta, bits=self.bits, grid=self.grid, name=name)
        if self.method == "magnitude-rtn":
            return magnitude_rtn_layer(delta, sparsity=self.sparsity, bits=self.bits, grid=self.grid,
                                       blocksize=self.blocksize, name=name)
        return gptzip_layer(delta, hessian, sparsity=self.sparsity, bits=self.bits, grid=self.grid,
                            grid_fit=self.grid_fit, blocksize=self.blocksize, percdamp=self.percdamp, name=name)

    def meta(self, calibration_tokens: int) -> dict[str, Any]:
        """The ``settings`` entry of the file's metadata (what the method used)."""
        return {"sparsity": self.sparsity if self.method in ("gptzip", "magnitude-rtn") else 0.0,
                "bits": 1 if self.method == "bitdelta" else self.bits, "grid": self.grid, "grid_fit": self.grid_fit,
                "blocksize": self.blocksize,
                "percdamp": self.percdamp,
                "calibration_tokens": calibration_tokens}


class _LayerCompressor:
    """Compresses one layer's ``finetuned − base`` delta into a record and keeps its
    statistics (``stats[name]``: shape, stored weights, relative error, OBS loss)."""

    def __init__(self, settings: _Settings, device: Any, base_params: dict[str, Any], transposed: dict[str, bool]):
        self.settings, self.device, self.base_params, self.transposed = settings, device, base_params, transposed
        self.stats: dict[str, dict[str, Any]] = {}

    def __call__(self, name: str, w_ft: Any, hessian: Any = None) -> Any:
        import torch

        t, device = self.transposed[name], self.device
        delta = _as_linear(w_ft, t).to(device) - _as_linear(self.base_params[name], t).to(device)
        res = self.settings.compress(delta, hessian, name)
        rec = to_record(name, res, t)
        v = torch.from_numpy(rec.values()).to(device=device, dtype=delta.dtype)
        stored = int(rec.mask.sum()) if rec.kind == "sparse" else int(np.prod(rec.shape))
        rel = float((delta - v).norm() / delta.norm().clamp_min(1e-30))
        self.stats[name] = {"shape": list(rec.shape), "stored": stored, "relative_error": rel,
                            "obs_loss": float(getattr(res, "obs_loss", float("nan")))}
        return rec


def _compress_each_layer(layers_ft: dict[str, Any], compress: _LayerCompressor, progress: bool) -> dict[str, Any]:
    """Every compressible layer compressed on its own (the methods without calibration)."""
    import torch

    records = {}
    with torch.no_grad():
        for name in progress_bar(list(layers_ft), enabled=progress, desc=compress.settings.method, unit="layer"):
            records[name] = compress(name, layers_ft[name].weight)
    return records


def _compress_sequentially(finetuned: Any, batches: list[Any], dense: dict[str, Any], compress: _LayerCompressor,
                           progress: bool) -> dict[str, Any]:
    """GPT-Zip's sequential pass (see the module docstring) on a copy of ``finetuned``
    whose other tensors are as the file will have them (base + float16 delta): block by
    block, each group of layers reading one input gets one Hessian from the outputs of the
    layers already compressed, and the block's outputs feed the next block."""
    import torch

    device, pb = compress.device, compress.base_params
    model = copy.deepcopy(finetuned).to(device).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in dense:
                p.data = _updated_weight(pb[n], dense[n], device)
    prefix, blocks = decoder_blocks(model)
    layers = compressible_layers(model)
    inputs = _capture_block_inputs(model, blocks[0], batches, device)
    records = {}
    bar = progress_bar(total=len(layers), enabled=progress, desc="gptzip", unit="layer")
    with torch.no_grad():
        for i, block in enumerate(blocks):
            mine = {n: m for n, m in layers.items() if n.startswith(f"{prefix}.{i}." if prefix else f"{i}.")}
            for group in _layer_groups(block, mine, inputs[0]):
                hessian = _group_hessian(block, mine[group[0]], compress.transposed[group[0]], inputs, device)
                for name in group:  # one Hessian for the layers that read the same input
                    rec = compress(name, mine[name].weight, hessian)
                    mine[name].weight.data = _updated_weight(pb[name], rec, device)
                    records[name] = rec
                    bar.update(1)
            inputs = [_with_hidden(a, k, _run_block(block, a, k)) for a, k in inputs]
    bar.close()
    del model
    return records


def _group_hessian(block: Any, first: Any, transposed: bool, inputs: list[tuple[tuple, dict]], device: Any) -> Any:
    """``H = 2XXᵀ/N`` of the inputs ``X`` that layer ``first`` of ``block`` sees over the
    block's ``inputs`` (each pass stops at that layer)."""
    cols = first.weight.shape[0] if transposed else first.weight.shape[1]
    acc = HessianAccumulator(cols, device=device)

    def collect(_m, inp):
        acc.add(inp[0])
        raise _Stop

    handle = first.register_forward_pre_hook(collect)
    try:
        for args, kwargs in inputs:
            try:
                _run_block(block, args, kwargs)
            except _Stop:
                pass
    finally:
        handle.remove()
    return acc.H


def _file_order(finetuned: Any, layers_ft: dict[str, Any], records: dict[str, Any],
                dense: dict[str, Any]) -> dict[str, Any]:
    """The records in the order of ``finetuned``'s parameters: compressed layers and dense deltas."""
    ordered = {n: records[n] for n in layers_ft if n in records}
    all_records = {}
    for n, _ in finetuned.named_parameters():
        if n in ordered:
            all_records[n] = ordered[n]
        elif n in dense:
            all_records[n] = dense[n]
    return all_records


def apply_delta(base: Any, delta: CompressedDelta, *, check_base: bool = True, device: Any = None) -> Any:
    """A copy of ``base`` with every parameter ``base + Δ̂`` from ``delta`` (float32 addition,
    cast to the parameter's dtype). With ``check_base`` the base model's SHA-256 must match the
    one recorded at compression (:class:`DeltaZipError` otherwise); a record whose parameter the
    model lacks, or whose shape differs, is an error naming the layer."""
    import torch

    if check_base and delta.meta.get("base_sha256") not in (None, model_fingerprint(base)):
        raise DeltaZipError("this delta was made against a different base model (SHA-256 "
                            f"{delta.meta['base_sha256'][:12]}… does not match the given base)")
    model = copy.deepcopy(base)
    if device is not None:
        model = model.to(device)
    params = _named_params(model)
    with torch.no_grad():
        for name, rec in delta.records.items():
            if name not in params:
                raise DeltaZipError(f"the delta has layer {name!r} that the base model lacks")
            p = params[name]
            p.data = _updated_weight(p, rec, p.device)
    return model
