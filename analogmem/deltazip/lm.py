"""Offline demonstration models for delta compression: byte-level causal LMs trained here.

Nothing is downloaded. The text is what every Python install carries:

* ``"pydoc-topics"`` — the language reference topics of :mod:`pydoc_data.topics` (≈ 466 kB),
  the *base* model's training text;
* ``"stdlib-docstrings"`` — the docstrings in the source files of a fixed list of
  standard-library modules (module, public classes, functions and methods; read with
  :mod:`ast`, so the text does not depend on what was imported before), the *finetuning* text.

Tokens are bytes (vocabulary 256), so no tokenizer is needed. A model is built from a
``transformers`` config (:func:`make_config`: GPT-2, OPT or Llama family) with
``AutoModelForCausalLM.from_config``; :func:`demo_models` trains a base model on the first text,
finetunes its transformer blocks on 90 % of the second (embeddings, final norm and head stay
frozen, so their delta is exactly zero), and caches both with ``save_pretrained`` under
``analogmem.ml.datasets.cache_dir()/deltazip/`` so later runs load them (``from_pretrained`` of the
local directory). Losses are in nats per byte; perplexity is ``exp(loss)`` per byte.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analogmem._io import atomic_write_text, progress as progress_bar
from analogmem._seeding import SeedLike, as_generator, as_seed_sequence
from analogmem.ml.datasets import cache_dir

from ._validation import DeltaZipError, check_positive_int

__all__ = [
    "CORPORA",
    "FAMILIES",
    "PRESETS",
    "DemoModels",
    "DemoSpec",
    "calibration_ids",
    "corpus",
    "demo_models",
    "load_causal_lm",
    "lm_loss",
    "make_config",
    "new_model",
    "split_corpus",
    "train_lm",
]

CORPORA = ("pydoc-topics", "stdlib-docstrings")
FAMILIES = ("gpt2", "opt", "llama")

#: Standard-library modules whose docstrings make the finetuning text (order fixed).
_DOC_MODULES = (
    "collections", "functools", "json", "argparse", "pathlib", "re", "string", "textwrap", "typing",
    "dataclasses", "enum", "logging", "csv", "datetime", "decimal", "fractions", "heapq", "bisect", "statistics",
    "random", "shutil", "subprocess", "threading", "queue", "asyncio", "contextlib", "copy", "pickle",
    "tempfile", "glob", "fnmatch", "difflib", "unittest", "doctest", "inspect", "ast", "tokenize", "zipfile",
    "tarfile", "gzip", "hashlib", "hmac", "secrets", "base64", "struct", "weakref", "types", "operator",
    "urllib.parse", "http.client", "email.message", "xml.etree.ElementTree", "sqlite3", "socket", "selectors",
    "signal", "traceback", "warnings", "timeit", "pprint", "reprlib", "calendar", "locale", "gettext",
    "configparser", "getopt", "optparse", "sched", "uuid", "shlex", "cmd", "colorsys", "filecmp", "fileinput",
    "graphlib", "netrc", "numbers", "plistlib",
)


def _torch():
    import torch

    return torch


# --------------------------------------------------------------------------- text
def corpus(name: str) -> bytes:
    """The UTF-8 bytes of a built-in text (see :data:`CORPORA`)."""
    if name == "pydoc-topics":
        from pydoc_data.topics import topics

        return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")
    if name == "stdlib-docstrings":
        return "\n\n".join(_source_docstrings(m) for m in _DOC_MODULES).encode("utf-8")
    raise DeltaZipError(f"unknown corpus {name!r}; choose from {CORPORA}")


def _source_docstrings(modname: str) -> str:
    """The docstrings in a standard-library module's source file, read with :mod:`ast` (so they
    do not depend on what has been imported or patched): the module's, then every public
    top-level class and function's and every public method's, in file order, cleaned as
    :func:`inspect.cleandoc` does."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(modname)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise DeltaZipError(f"standard-library module {modname!r} has no Python source here")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    parts = [ast.get_docstring(tree)]
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            parts.append(ast.get_docstring(node))
            if isinstance(node, ast.ClassDef):
                parts.extend(ast.get_docstring(m) for m in node.body
                             if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and not m.name.startswith("_"))
    return "\n\n".join(p for p in parts if p)


def split_corpus(data: bytes, heldout_fraction: float = 0.1) -> tuple[bytes, bytes]:
    """``(train, heldout)``: the last ``heldout_fraction`` of ``data`` is held out."""
    if not 0 < heldout_fraction < 1:
        raise DeltaZipError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
    cut = int(round(len(data) * (1 - heldout_fraction)))
    return data[:cut], data[cut:]


def _ids(data: Any) -> Any:
    """Token ids (1-D int64 tensor): the bytes of ``data`` (bytes), or ``data`` itself when it is
    already a 1-D sequence of integer token ids (e.g. from a tokenizer)."""
    torch = _torch()
    if isinstance(data, (bytes, bytearray)):
        return torch.from_numpy(np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int64))
    ids = torch.as_tensor(data)
    if ids.ndim != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise DeltaZipError(f"text must be bytes or a 1-D integer tensor of token ids, got shape "
                            f"{tuple(ids.shape)} dtype {ids.dtype}")
    return ids.long()


def calibration_ids(data: Any, n_sequences: int, seq_len: int, seed: SeedLike = 0) -> Any:
    """``(n_sequences, seq_len)`` int64 token ids: windows of ``data`` (bytes, or 1-D token ids)
    at random offsets drawn from ``seed``."""
    n_sequences = check_positive_int(n_sequences, "n_sequences")
    seq_len = check_positive_int(seq_len, "seq_len")
    ids = _ids(data)
    if ids.numel() <= seq_len:
        raise DeltaZipError(f"the text has {ids.numel()} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    starts = as_generator(seed).integers(0, ids.numel() - seq_len, size=n_sequences)
    return _torch().stack([ids[s:s + seq_len] for s in starts])


# --------------------------------------------------------------------------- models
def make_config(family: str = "gpt2", *, n_layer: int = 2, d_model: int = 32, n_head: int = 2, ctx: int = 64,
                vocab_size: int = 256) -> Any:
    """A ``transformers`` config for a byte-level causal LM without dropout: ``family`` is
    ``"gpt2"`` (Conv1D layers, tied head), ``"opt"`` (nn.Linear, tied head) or ``"llama"``
    (nn.Linear, gated MLP, rotary positions, untied head); MLP width 4·d_model (8/3·d for Llama)."""
    n_layer = check_positive_int(n_layer, "n_layer")
    d_model = check_positive_int(d_model, "d_model")
    n_head = check_positive_int(n_head, "n_head")
    if d_model % n_head:
        raise DeltaZipError(f"d_model={d_model} is not a multiple of n_head={n_head}")
    if family == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(vocab_size=vocab_size, n_positions=ctx, n_embd=d_model, n_layer=n_layer, n_head=n_head,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    if family == "opt":
        from transformers import OPTConfig

        return OPTConfig(vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=n_layer,
                         ffn_dim=4 * d_model, num_attention_heads=n_head, max_position_embeddings=ctx,
                         word_embed_proj_dim=d_model, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                         pad_token_id=1, bos_token_id=2, eos_token_id=2)
    if family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=int(8 * d_model / 3),
                           num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_head,
                           max_position_embeddings=ctx, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                           tie_word_embeddings=False)
    raise DeltaZipError(f"unknown model family {family!r}; choose from {FAMILIES}")


def new_model(config: Any, seed: int = 0) -> Any:
    """``AutoModelForCausalLM.from_config(config)`` initialised under ``torch.manual_seed(seed)``
    (inside ``torch.random.fork_rng``: the caller's global torch random state is left as it was)."""
    torch = _torch()
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return AutoModelForCausalLM.from_config(config).eval()


def load_causal_lm(path: str | Path, device: Any = "cpu") -> Any:
    """A causal LM saved with ``save_pretrained`` in a local directory (no network)."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise DeltaZipError(f"{str(path)!r} is not a saved transformers model (no config.json)")
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(device).eval()


def train_lm(model: Any, data: Any, *, steps: int, batch_size: int = 16, seq_len: int = 64, lr: float = 1e-3,
             seed: SeedLike = 0, trainable: list[Any] | None = None, progress: bool = True) -> list[float]:
    """Train ``model`` on random ``seq_len``-byte windows of ``data`` with AdamW (weight decay
    0) and a linear warm-up (5 %) + cosine learning-rate schedule; only ``trainable``
    parameters (default all) are updated. Returns the training loss of every step (nats/byte);
    the model is left in eval mode."""
    torch = _torch()

    steps = check_positive_int(steps, "steps")
    params = list(trainable) if trainable is not None else list(model.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    ss = as_seed_sequence(seed)
    g = torch.Generator().manual_seed(int(ss.generate_state(1)[0]))
    ids = _ids(data)
    if ids.numel() <= seq_len:
        raise DeltaZipError(f"the text has {ids.numel()} bytes, fewer than seq_len + 1 = {seq_len + 1}")
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: (t + 1) / warm if t < warm else 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, steps - warm))))
    model.train()
    losses = []
    offsets = torch.arange(seq_len)
    with progress_bar(total=steps, enabled=progress, desc="train", unit="step") as bar:
        for _ in range(steps):
            starts = torch.randint(0, ids.numel() - seq_len, (batch_size,), generator=g)
            x = ids[starts[:, None] + offsets[None, :]].to(device)
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return losses


def lm_loss(model: Any, data: Any, *, seq_len: int = 64, batch_size: int = 32, device: Any = None) -> float:
    """Mean next-token cross-entropy of ``model`` on ``data`` (bytes: nats per byte; or 1-D
    token ids: nats per token) cut into non-overlapping ``seq_len``-token windows (the last
    partial window dropped); every token but the first of each window is predicted."""
    torch = _torch()
    ids = _ids(data)
    n = ids.numel() // seq_len
    if n == 0:
        raise DeltaZipError(f"the evaluation text has {ids.numel()} bytes, fewer than seq_len = {seq_len}")
    windows = ids[: n * seq_len].reshape(n, seq_len)
    device = device if device is not None else next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for a in range(0, n, batch_size):
            x = windows[a:a + batch_size].to(device)
            logits = model(input_ids=x).logits[:, :-1].float()
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                             x[:, 1:].reshape(-1), reduction="sum"))
            count += x[:, 1:].numel()
    return total / count


# --------------------------------------------------------------------------- cached demo pair
@dataclass(frozen=True)
class DemoSpec:
    """How a demo base/finetuned pair is made (its hash is the cache key)."""

    family: str = "gpt2"
    n_layer: int = 4
    d_model: int = 128
    n_head: int = 4
    ctx: int = 128
    base_steps: int = 400
    finetune_steps: int = 200
    batch_size: int = 16
    base_lr: float = 2e-3
    finetune_lr: float = 3e-4
    seed: int = 0
    base_corpus: str = "pydoc-topics"
    finetune_corpus: str = "stdlib-docstrings"
    heldout_fraction: float = 0.1
    recipe: int = 1


#: ``tiny``: 2 blocks, d = 32 (tests; seconds); ``small``: 4 blocks, d = 128 (the CLI default;
#: a few minutes of CPU training, once).
PRESETS = {
    "tiny": DemoSpec(n_layer=2, d_model=32, n_head=2, ctx=64, base_steps=400, finetune_steps=200, batch_size=8,
                     base_lr=3e-3, finetune_lr=2e-3),
    "small": DemoSpec(),
}


@dataclass
class DemoModels:
    """A cached base/finetuned pair: the models (eval mode, CPU), their directories, the spec,
    the finetuning text split (``finetune_train`` for calibration, ``heldout`` for evaluation),
    and ``info`` (training losses, corpus sizes and hashes, whether trained now)."""

    base: Any
    finetuned: Any
    base_dir: Path
    finetuned_dir: Path
    spec: DemoSpec
    finetune_train: bytes
    heldout: bytes
    info: dict[str, Any]


_BASE_FIELDS = ("family", "n_layer", "d_model", "n_head", "ctx", "base_steps", "batch_size", "base_lr", "seed",
                "base_corpus", "recipe")


def _key(payload: dict[str, Any]) -> str:
    import transformers

    payload = dict(payload, transformers_major=transformers.__version__.split(".")[0])
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _save_dir(final: Path, write) -> None:
    """Write a directory atomically: fill a temporary sibling, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        write(tmp)
        try:
            os.replace(tmp, final)
        except OSError:  # another process cached the same thing first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def demo_models(spec: DemoSpec | str = "small", *, family: str | None = None, progress: bool = True,
                root: str | Path | None = None) -> DemoModels:
    """The demo base/finetuned pair of ``spec`` (a :class:`DemoSpec` or a preset name), loaded
    from the cache (``root``, default ``cache_dir()/deltazip``) or trained now and cached.
    ``family`` overrides the spec's model family."""
    import dataclasses

    if isinstance(spec, str):
        if spec not in PRESETS:
            raise DeltaZipError(f"unknown preset {spec!r}; choose from {sorted(PRESETS)}")
        spec = PRESETS[spec]
    if family is not None:
        spec = dataclasses.replace(spec, family=family)
    texts = {"base": corpus(spec.base_corpus), "finetune": corpus(spec.finetune_corpus)}
    ft_train, heldout = split_corpus(texts["finetune"], spec.heldout_fraction)
    sha = {k: hashlib.sha256(v).hexdigest() for k, v in texts.items()}
    full = asdict(spec)
    base_key = _key({"base": {k: full[k] for k in _BASE_FIELDS}, "corpus": sha["base"]})
    key = _key({"spec": full, "corpora": sha})
    root = Path(root) if root is not None else cache_dir() / "deltazip"
    base_dir = root / f"base-{spec.family}-L{spec.n_layer}-d{spec.d_model}-{base_key}"
    pair_dir = root / f"{spec.family}-L{spec.n_layer}-d{spec.d_model}-{key}"
    seeds = np.random.SeedSequence(spec.seed).spawn(2)
    trained_now = []
    if not (base_dir / "info.json").is_file():
        config = make_config(spec.family, n_layer=spec.n_layer, d_model=spec.d_model, n_head=spec.n_head,
                             ctx=spec.ctx)
        base = new_model(config, spec.seed)
        losses = train_lm(base, texts["base"], steps=spec.base_steps, batch_size=spec.batch_size, seq_len=spec.ctx,
                          lr=spec.base_lr, seed=seeds[0], progress=progress)
        info = {"base_final_train_loss": float(np.mean(losses[-20:])), "corpus_sha256": sha["base"],
                "n_parameters": int(sum(p.numel() for p in base.parameters()))}

        def write_base(tmp: Path) -> None:
            base.save_pretrained(tmp / "model")
            atomic_write_text(tmp / "info.json", json.dumps(info, indent=2))

        _save_dir(base_dir, write_base)
        trained_now.append("base")
    base_info = json.loads((base_dir / "info.json").read_text())
    if not (pair_dir / "info.json").is_file():
        from .compress import decoder_blocks

        finetuned = load_causal_lm(base_dir / "model")
        _, blocks = decoder_blocks(finetuned)
        losses = train_lm(finetuned, ft_train, steps=spec.finetune_steps, batch_size=spec.batch_size,
                          seq_len=spec.ctx, lr=spec.finetune_lr, seed=seeds[1], trainable=list(blocks.parameters()),
                          progress=progress)
        info = {"spec": full, "key": key, "base_dir": str(base_dir),
                "corpus_bytes": {k: len(v) for k, v in texts.items()}, "corpus_sha256": sha,
                "finetune_train_bytes": len(ft_train), "heldout_bytes": len(heldout),
                "base_final_train_loss": base_info["base_final_train_loss"],
                "finetune_final_train_loss": float(np.mean(losses[-20:])),
                "n_parameters": base_info["n_parameters"], "torch_version": _torch().__version__}

        def write_pair(tmp: Path) -> None:
            finetuned.save_pretrained(tmp / "finetuned")
            atomic_write_text(tmp / "info.json", json.dumps(info, indent=2))

        _save_dir(pair_dir, write_pair)
        trained_now.append("finetuned")
    info = json.loads((pair_dir / "info.json").read_text())
    info["trained_now"] = trained_now
    return DemoModels(load_causal_lm(base_dir / "model"), load_causal_lm(pair_dir / "finetuned"), base_dir / "model",
                      pair_dir / "finetuned", spec, ft_train, heldout, info)
