"""The ``analogmem deltazip`` command: GPT-Zip delta compression of a finetuned LM (thesis ch.4).

Wire it into the main parser with :func:`add_subparser`; the command sets ``func``, which takes
the parsed namespace and returns an exit code. It trains (once, cached) or loads the offline
demo models, or takes ``--base DIR --finetuned DIR`` (local ``save_pretrained`` directories),
compresses the delta with each ``--methods`` entry, prints the table, reads the GPT-Zip delta
back from an emulated analog store, and writes ``--json`` (self-describing keys and units),
``--plot`` (PNG) and ``--out DIR`` (the packed ``.amdelta`` files) on request.
Standalone: ``python -m analogmem.deltazip.cli deltazip ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analogmem._cli_output import refuse, run_standalone, write_outputs
from analogmem.errors import AnalogMemError

from .compress import METHODS
from .experiment import (STORE_TIMES_S, UNITS, check_settings, evaluate_methods, format_store_table, format_table, plot_deltazip,
                         run_deltazip, store_readback)
from .lm import FAMILIES, PRESETS, DemoModels, DemoSpec, load_causal_lm, split_corpus, corpus
from ._validation import DeltaZipError
from .obs import GRID_FITS, GRID_KINDS

__all__ = ["add_subparser", "main", "run_deltazip_command"]


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Add the ``deltazip`` command to an ``argparse`` sub-parser collection; returns its parser."""
    p = subparsers.add_parser(
        "deltazip", description="Compress the delta between a finetuned causal LM and its base with GPT-Zip (Hessian-aware "
                    "joint pruning + quantisation), BitDelta and magnitude-prune + round-to-nearest; report sizes "
                    "and held-out loss, and read the GPT-Zip delta back from an emulated analog store.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small",
                   help="offline demo pair (trained once, cached): tiny = 2 blocks d=32, small = 4 blocks d=128 "
                        "(default)")
    p.add_argument("--family", choices=FAMILIES, default=None, help="model family of the demo pair (default gpt2)")
    p.add_argument("--base", type=Path, default=None, help="a local save_pretrained directory of the base model "
                   "(with --finetuned; the held-out text is then the demo finetuning text's last 10%%)")
    p.add_argument("--finetuned", type=Path, default=None, help="local directory of the finetuned model")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=["gptzip", "magnitude-rtn", "bitdelta"],
                   help="compressors (default gptzip magnitude-rtn bitdelta)")
    p.add_argument("--sparsity", type=float, default=0.95, help="fraction of delta entries pruned (default 0.95)")
    p.add_argument("--bits", type=int, default=2, help="bits per kept entry (default 2)")
    p.add_argument("--grid", choices=GRID_KINDS, default="sparse",
                   help="quantisation grid: sparse (no zero level, default) or minmax (GPTQ's)")
    p.add_argument("--grid-fit", choices=GRID_FITS, default="pruned",
                   help="fit GPT-Zip's grid to the weights an OBS pruning sweep keeps (pruned, default) or to the "
                        "delta before the sweep (delta)")
    p.add_argument("--calibration", type=int, default=64, help="calibration sequences for GPT-Zip (default 64)")
    p.add_argument("--device", default="cpu", help="torch device for compression and evaluation (cpu, cuda, ...)")
    p.add_argument("--store-card", default="pcm-nandakumar2019",
                   help="device card for the store read-back, or 'none' (default pcm-nandakumar2019)")
    p.add_argument("--times", type=float, nargs="+", default=list(STORE_TIMES_S),
                   help="store read times in seconds after programming (default 1 s, 1 h, 1 d, 30 d, 1 y)")
    p.add_argument("--ecc-t", type=int, default=8, help="BCH bit errors corrected per 64-byte block (0: none)")
    p.add_argument("--out", type=Path, default=None, help="write the packed deltas (METHOD.amdelta) here")
    p.add_argument("--json", metavar="PATH", type=Path, help="write the results as JSON")
    p.add_argument("--plot", metavar="PATH", type=Path, help="write a PNG figure")
    p.add_argument("--seed", type=int, default=0, help="random seed (non-negative integer; default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run_deltazip_command)
    return p


def _external_pair(args) -> DemoModels:
    """Load ``--base``/``--finetuned``; the held-out text is the last 10 % of the demo's finetuning
    text, as bytes for byte-level models, or through the finetuned directory's own tokenizer."""
    if args.base is None or args.finetuned is None:
        raise DeltaZipError("--base and --finetuned go together (two local save_pretrained directories)")
    spec = PRESETS[args.preset]
    ft_train, heldout = split_corpus(corpus(spec.finetune_corpus), spec.heldout_fraction)
    base, ft = load_causal_lm(args.base, args.device), load_causal_lm(args.finetuned, args.device)
    unit = "nats per byte"
    if any((args.finetuned / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.finetuned, local_files_only=True)
        ft_train = torch_ids(tok(ft_train.decode("utf-8"))["input_ids"])
        heldout = torch_ids(tok(heldout.decode("utf-8"))["input_ids"])
        unit = "nats per token"
    elif int(ft.config.vocab_size) < 256:
        raise DeltaZipError(f"{str(args.finetuned)!r} has no tokenizer and a vocabulary of {ft.config.vocab_size} < 256 "
                            "tokens, so bytes cannot be its tokens")
    ctx = int(getattr(ft.config, "n_positions", None) or getattr(ft.config, "max_position_embeddings", 128))
    spec = DemoSpec(family=ft.config.model_type, ctx=min(ctx, 128))
    return DemoModels(base, ft, args.base, args.finetuned, spec, ft_train, heldout,
                      {"trained_now": False, "loss_unit": unit,
                       "n_parameters": int(sum(p.numel() for p in ft.parameters()))})


def torch_ids(ids) -> "object":
    """A list of token ids as a 1-D int64 tensor."""
    import torch

    return torch.tensor(ids, dtype=torch.int64)


def run_deltazip_command(args: argparse.Namespace) -> int:
    """Run ``analogmem deltazip``; returns 0, or (:func:`~analogmem._cli_output.refuse`) 2 after
    printing a refused setting or model directory in one line: an :class:`AnalogMemError`, or the
    ``ValueError`` transformers raises for a directory it cannot load."""
    try:
        check_settings(sparsity=args.sparsity, bits=args.bits, n_calibration=args.calibration, seed=args.seed,
                       ecc_t=args.ecc_t)
        return _run(args)
    except (AnalogMemError, ValueError) as exc:
        return refuse("analogmem deltazip", exc)


def _run(args: argparse.Namespace) -> int:
    import time

    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    store_card = None if str(args.store_card).lower() == "none" else args.store_card
    settings = {"preset": args.preset, "family": args.family, "methods": args.methods, "sparsity": args.sparsity,
                "bits": args.bits, "grid": args.grid, "grid_fit": args.grid_fit,
                "calibration_sequences": args.calibration, "device": args.device, "store_card": store_card, "times_s": args.times, "ecc_t": args.ecc_t,
                "seed": args.seed}
    if args.base is not None or args.finetuned is not None:
        start = time.perf_counter()
        dm = _external_pair(args)
        rows, deltas = evaluate_methods(dm, tuple(args.methods), sparsity=args.sparsity, bits=args.bits,
                                        grid=args.grid, grid_fit=args.grid_fit, n_calibration=args.calibration,
                                        seed=args.seed, device=args.device, out_dir=args.out, progress=not args.no_progress)
        store_rows = (store_readback(dm, deltas["gptzip"], card=store_card, times_s=tuple(args.times),
                                     ecc_t=args.ecc_t, seed=args.seed, device=args.device,
                                     progress=not args.no_progress)
                      if store_card and "gptzip" in deltas and args.bits >= 2 else [])
        result = {"model": {"base": str(args.base), "finetuned": str(args.finetuned),
                            "n_parameters": dm.info["n_parameters"],
                            "loss_unit": dm.info["loss_unit"]},
                  "rows": rows, "store_rows": store_rows, "elapsed_s": time.perf_counter() - start}
    else:
        result = run_deltazip(args.preset, family=args.family, methods=tuple(args.methods), sparsity=args.sparsity,
                              bits=args.bits, grid=args.grid, grid_fit=args.grid_fit,
                              n_calibration=args.calibration, seed=args.seed, device=args.device, store_card=store_card, store_times_s=tuple(args.times),
                              ecc_t=args.ecc_t, out_dir=args.out, progress=not args.no_progress)
    print(format_table(result["rows"]))
    if result["store_rows"]:
        print()
        print(format_store_table(result["store_rows"]))
    print(f"elapsed: {result['elapsed_s']:.1f} s")
    payload = {"command": "analogmem deltazip", "settings": settings, "units": UNITS, **result}
    write_outputs(args, payload, lambda path: plot_deltazip(result, path))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m analogmem.deltazip.cli deltazip ...``."""
    return run_standalone(add_subparser, argv)


if __name__ == "__main__":
    sys.exit(main())
