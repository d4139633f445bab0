"""Render the results tables of README.md and docs/*.md from the JSON files in docs/results/.

    .venv/bin/python -m scripts.docs_tables --check      # exit 1, with a diff, if a generated block is stale
    .venv/bin/python -m scripts.docs_tables --write      # rewrite every generated block from its JSON
    .venv/bin/python -m scripts.docs_tables --commands   # the commands that rewrite each JSON (from its provenance)

Every results table in the docs sits in a *generated block*:

    <!-- generated: RENDERER docs/results/NAME.json [docs/results/OTHER.json ...] -->
    ...markdown rendered from the JSON file(s)...
    <!-- /generated -->

``RENDERER`` names a function below (registered with :func:`renderer`) that takes the loaded JSON
documents, in the order the marker lists them, and returns markdown. Paths are relative to the
repository root. A table's block ends with a line naming the command that wrote its JSON, read
from the ``provenance`` that :func:`analogmem._io.write_json` records, so the command shown is the
one that produced the numbers. Numbers that prose quotes from a table are rendered the same way
(small blocks of sentences or bullets), so no hand-copied number can go stale unseen.

Regenerating a JSON is on demand (the command shown next to its table); this script only turns the
stored JSON into markdown — with the standard library, plus ``analogmem.privacy`` (numpy and scipy)
for the RRSC paper's values and the privacy tables' own formatters — so ``tests/test_docs_tables.py``
checks every document in seconds: a hand-edited number, or a table left behind after its JSON was
regenerated, fails it.

To add a table: run its command with ``--json docs/results/NAME.json``; write a function
``@renderer("name") def _name(doc) -> str`` here (use :func:`table` and :func:`source`); put an
empty marker pair where the table goes; run ``--write``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

__all__ = ["ROOT", "RESULTS", "TablesError", "renderer", "documents", "table", "source", "render_text", "check", "write",
           "markers", "commands", "main"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "docs/results"
_OPEN = re.compile(r"^<!-- generated: (?P<name>[\w-]+)(?P<paths>(?: \S+\.json)+) -->$")
_CLOSE = "<!-- /generated -->"
_RENDERERS: dict[str, Callable[..., str]] = {}


class TablesError(Exception):
    """A marker that names an unknown renderer or a missing JSON file, or is not closed."""


def renderer(name: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Register a function ``(*docs) -> markdown`` under ``name`` (the marker's RENDERER)."""
    def register(fn: Callable[..., str]) -> Callable[..., str]:
        _RENDERERS[name] = fn
        return fn
    return register


def documents(root: Path = ROOT) -> list[Path]:
    """The markdown files that may hold generated blocks: README.md, docs/*.md and
    scripts/cards/README.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "scripts" / "cards" / "README.md"]


# ------------------------------------------------------------------------------------ formatting
def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; cells are converted with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def command(doc: dict) -> str:
    """The command line that wrote ``doc`` (its provenance), as one would type it in the repository."""
    cmd = doc["provenance"]["command"]
    script = cmd.split()[0]
    if script.endswith(".py"):
        if (ROOT / "scripts" / "cards" / script).is_file() and not (ROOT / "benchmarks" / script).is_file():
            return f"python -m scripts.cards.{script.removesuffix('.py')}" + cmd[len(script):]
        return "python benchmarks/" + cmd
    return cmd


def source(*docs: dict, paths: list[str] | None = None) -> str:
    """The line under a table: the command(s) that wrote its JSON, the analogmem commit, the seed
    and the wall time (start-up included) on how many cores."""
    parts = []
    for doc in docs:
        p = doc["provenance"]
        commit = (p.get("git_commit") or "unknown")[:7] + (" + local changes" if p.get("git_dirty") else "")
        cores = p.get("threads", {}).get("cores_available")
        parts.append(f"`{command(doc)}` (analogmem {p['analogmem_version']}, commit {commit}; "
                     f"{p['wall_time_s']:.0f} s on {cores} shared cores, {p['written_at_utc'][:10]})")
    return "Generated from " + "; ".join(parts) + "."


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage (``0.966`` → ``96.60%``); None → ``—``."""
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def num(x: float | int | None, spec: str = ",") -> str:
    """``format(x, spec)``; None → ``—``."""
    return "—" if x is None else format(x, spec)


def sig(x: float, digits: int = 4) -> str:
    """``x`` to ``digits`` significant figures (``0.02173``, ``0.164``)."""
    return f"{x:.{digits}g}"


# ------------------------------------------------------------------------------------ the engine
def _load(paths: list[str], root: Path) -> list[dict]:
    docs = []
    for rel in paths:
        path = root / rel
        if not path.is_file():
            raise TablesError(f"{rel}: no such results file (run the command that writes it)")
        docs.append(json.loads(path.read_text()))
    return docs


def render_text(text: str, root: Path = ROOT, where: str = "<text>") -> str:
    """``text`` with every generated block re-rendered from its JSON files."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _OPEN.match(line.strip())
        out.append(line)
        i += 1
        if not m:
            continue
        name, paths = m["name"], m["paths"].split()
        if name not in _RENDERERS:
            raise TablesError(f"{where}:{i}: unknown renderer {name!r} (known: {sorted(_RENDERERS)})")
        try:
            end = next(j for j in range(i, len(lines)) if lines[j].strip() == _CLOSE)
        except StopIteration:
            raise TablesError(f"{where}:{i}: {name!r} block is not closed with {_CLOSE}") from None
        out.append(_RENDERERS[name](*_load(paths, root)).strip("\n"))
        out.append(lines[end])
        i = end + 1
    return "\n".join(out)


def check(root: Path = ROOT) -> list[str]:
    """A unified diff for every document whose generated blocks differ from what the stored JSON
    renders to (empty: all current)."""
    problems = []
    for path in documents(root):
        if not path.is_file():
            continue
        text = path.read_text()
        rel = str(path.relative_to(root))
        new = render_text(text, root, rel)
        if new != text:
            problems.append("".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                         f"{rel} (in the file)", f"{rel} (rendered from its JSON)")))
    return problems


def write(root: Path = ROOT) -> list[Path]:
    """Rewrite the generated blocks of every document; returns the files that changed."""
    changed = []
    for path in documents(root):
        if not path.is_file():
            continue
        text = path.read_text()
        new = render_text(text, root, str(path.relative_to(root)))
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def markers(root: Path = ROOT) -> dict[str, list[tuple[str, str]]]:
    """JSON path → [(document, renderer)] for every generated block."""
    used: dict[str, list[tuple[str, str]]] = {}
    for path in documents(root):
        if path.is_file():
            for line in path.read_text().split("\n"):
                m = _OPEN.match(line.strip())
                if m:
                    for p in m["paths"].split():
                        used.setdefault(p, []).append((str(path.relative_to(root)), m["name"]))
    return used


def commands(root: Path = ROOT) -> list[str]:
    """The command that wrote each results JSON, in file-name order (from its provenance)."""
    return [command(json.loads(p.read_text())) for p in sorted((root / RESULTS).glob("*.json"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="compare the docs with what their JSON renders to")
    mode.add_argument("--write", action="store_true", help="rewrite the generated blocks")
    mode.add_argument("--commands", action="store_true", help="print the command behind every results JSON")
    args = parser.parse_args(argv)
    if args.commands:
        print("\n".join(commands()))
        return 0
    if args.write:
        for path in write():
            print(f"rewrote {path.relative_to(ROOT)}")
        return 0
    problems = check()
    for p in problems:
        sys.stdout.write(p)
    print("docs tables: " + ("current" if not problems else f"{len(problems)} document(s) out of date "
                             "(`python -m scripts.docs_tables --write` after regenerating the JSON)"))
    return 1 if problems else 0


# ==================================================================================== renderers
# README: calibrating a card ---------------------------------------------------------------------
_CANDIDATES = {"gaussian": "Gaussian in ln g"}


@renderer("store-cards")
def _store_cards(*docs: dict) -> str:
    """The ch.3 per-card table (the job's own renderer, as `analogmem store --table` prints it)."""
    from analogmem.jobs.store_resnet import card_table

    return card_table(list(docs)) + "\n\n" + source(*docs)


def _per_chip(doc: dict) -> list:
    """Every per-chip accuracy list of a store run (headline budgets and the time panel)."""
    rows = [b for a in doc["headline"]["approaches"].values() for b in a["budgets"]] + doc["time_panel"]["rows"]
    return [t["accuracy_per_chip"] for r in rows for t in r.get("by_time", [])]


@renderer("out-of-core")
def _out_of_core(*docs: dict) -> str:
    """``benchmarks/bench_out_of_core.py`` runs (one per ``--io``): a 10⁹-cell chip on disk
    against an in-memory bench measured in the same run."""
    rows = []
    for d in docs:
        r, m, c = d["program_read"], d["in_memory"], d["crash"]
        rows.append(["direct (O_DIRECT)" if r["direct_io"] else "page cache", f"{d['cells']:,}",
                     f"{d['state_file_bytes'] / 1e9:.0f}", f"{r['program_s']:.1f}", f"{r['read_s']:.1f}",
                     f"{d['reopen']['read_s']:.1f}", f"{max(r['max_rss_bytes'], d['reopen']['max_rss_bytes']) / 2**30:.2f}",
                     f"{d['cells'] / (r['program_s'] + r['read_s']) / 1e6:.1f}", f"{m['ram_cells_per_s'] / 1e6:.1f}",
                     f"{d['throughput_in_memory_over_out_of_core']:.2f}×",
                     "yes" if all(m["first_cells_equal_in_memory"].values()) else "NO",
                     "yes" if c["killed_mid_program"] and c["refused_on_open"] else "NO"])
    return (table(["state I/O", "cells", "state (GB)", "program (s)", "read 1 day (s)", "read after reopen (s)",
                   "peak RSS (GiB)", "M cells/s", "in memory, same run (M cells/s)", "slower per cell",
                   "first 4 M cells = in memory", "killed program refused"], rows)
            + "\n\n" + source(*docs))


@renderer("storage-speed")
def _storage_speed(doc: dict) -> str:
    """``benchmarks/bench_storage.py``: put + get of N weights per encoder and dtype against the
    kernels' program + read of the same cells in the same process."""
    rows = [[f"{r['weights']:,}", r["dtype"], "digital + BCH" if r["encoder"] == "digital" else r["encoder"],
             f"{r['put_weights_per_s'] / 1e6:.1f}", f"{r['get_weights_per_s'] / 1e6:.1f}",
             f"{r['kernels_cells_per_s'] / 1e6:.0f}", f"{r['ratio_storage_over_kernels']:.2f}×",
             f"{r['peak_rss_extra_bytes_per_weight']:.1f}", f"{r['relative_rms_error_1day']:.3f}"]
            for r in doc["runs"]]
    return (table(["weights", "cells' dtype", "encoder", "put (M weights/s)", "get 1 day (M weights/s)",
                   "kernels, same cells (M cells/s)", "put + get / kernels", "peak RSS beyond chip (B/weight)",
                   "relative RMS error"], rows)
            + f"\n\nCard {doc['device']}, 2 cells per weight (digital: 8-bit weights, BCH t = 8, 2 bits per cell), "
            f"{doc['threads']} threads. " + source(doc))


@renderer("model-sharded")
def _model_sharded(doc: dict) -> str:
    """``benchmarks/bench_model_sharded.py``: one chip in process against ``shards=N`` on Ray."""
    one, sh = doc["one_chip"], doc["sharded"]
    rows = [["one chip, this process", f"{one['program_s']:.1f}", f"{one['read_s']:.1f}",
             f"{one['relative_rms_error']:.4f}", "—"],
            [f"{doc['shards']} shards, Ray ({sh['ray']})", f"{sh['program_s']:.1f}", f"{sh['read_s']:.1f}",
             f"{sh['relative_rms_error']:.4f}", ", ".join(f"{c:,}" for c in doc["cells_per_shard"])]]
    return (table(["model on", "program (s)", "read 1 day (s)", "relative RMS error", "cells per shard"], rows)
            + f"\n\n{doc['weights']:,} {doc['weight_dtype']} weights ({doc['layers']} layers of "
            f"{doc['layer_shape'][0]} × {doc['layer_shape'][1]}), {doc['device']}, {doc['cell_dtype']} cells; "
            f"sharded / one chip: program {doc['program_ratio_sharded_over_one_chip']:.2f}×, read "
            f"{doc['read_ratio_sharded_over_one_chip']:.2f}× on the same {doc['cpus']} cores (Ray start "
            f"{sh['ray_start_s']:.1f} s not included). " + source(doc))


@renderer("store-run-effect")
def _store_run_effect(doc: dict) -> str:
    """``analogmem store`` on a write-verify card: per chip the run effect drawn and what it did
    to the programming (pulses, failed cells), against the same chips at the mean run effect;
    then the accuracy spread over chips with and without it, per approach at 1 cell per weight."""
    wv = doc["write_verify"]
    at_mean = {c["chip"]: c for c in wv["per_chip_at_mean"]}
    rows = [[str(c["chip"]), f"{c['run_effect']['between_logit']:+.3f}", f"{c['mean_pulses_per_cell']:.1f}",
             f"{at_mean[c['chip']]['mean_pulses_per_cell']:.1f}", f"{100 * c['failed_fraction']:.2f}",
             f"{100 * at_mean[c['chip']]['failed_fraction']:.2f}"] for c in wv["per_chip"]]
    rows.append(["SD over chips", "", f"{wv['mean_pulses_per_cell_sd_over_chips']:.2f}",
                 f"{wv['mean_pulses_per_cell_sd_over_chips_at_mean']:.3f}",
                 f"{100 * wv['failed_fraction_sd_over_chips']:.2f}",
                 f"{100 * wv['failed_fraction_sd_over_chips_at_mean']:.3f}"])
    acc = [[a["approach"], a["time"], f"{100 * a['accuracy_sd_over_chips']:.2f}",
            f"{100 * a['accuracy_sd_over_chips_at_mean']:.2f}", f"{100 * a['mean_abs_paired_difference']:.2f}"]
           for a in wv["accuracy_spread"] if a["budget_cells_per_weight"] == 1]
    return (table(["chip", "run effect drawn (logit p)", "pulses per cell", "at the mean effect",
                   "failed cells (%)", "at the mean effect"], rows)
            + f"\n\nPulses against the drawn effect: correlation {wv['pulses_vs_between_effect_correlation']:.3f}; "
            f"card run-to-run SD {wv['card_run_sd_between_logit']:.3f} between runs and "
            f"{wv['card_run_sd_within_logit']:.3f} within (logit p); {wv['n_windows']} windows, "
            f"{wv['windows_outside_fit_support']} outside the fit's support.\n\n"
            + table(["approach (1 cell per weight)", "read at", "accuracy SD over chips (points)",
                     "at the mean effect", "mean absolute paired difference (points)"], acc)
            + "\n\n" + source(doc))


@renderer("model-out-of-core")
def _model_out_of_core(doc: dict) -> str:
    """``benchmarks/bench_model_out_of_core.py``: a synthetic model programmed with
    ``program_model(..., state_dir=...)`` and read back tensor by tensor."""
    gib = 2**30
    rows = [[f"{doc['weights']:,}", f"{doc['cells']:,} ({doc['cell_dtype']})", doc["device"],
             f"{doc['chip_bytes_on_disk'] / 1e9:.1f}", f"{doc['program_s']:.0f}",
             f"{doc['program_cells_per_s'] / 1e6:.1f}", f"{doc['read_s']:.0f}",
             f"{doc['read_weights_per_s'] / 1e6:.1f}", f"{doc['peak_rss_bytes'] / gib:.2f}",
             f"{doc['model_bytes'] / gib:.2f}", f"{doc['relative_rms_error']:.3f}",
             "yes" if doc["prefix_bit_identical_to_in_memory"] else "NO"]]
    return (table(["weights", "cells", "card", "on disk (GB)", "program (s)", "M cells/s", "read 1 day (s)",
                   "M weights/s", "peak RSS (GiB)", "of which the model's own weights (GiB)", "relative RMS error",
                   f"first {doc['prefix_layers_checked']} layers = in memory alone"], rows)
            + "\n\n" + source(doc))


@renderer("store-ray")
def _store_ray(serial: dict, ray: dict) -> str:
    """Ray against serial for the same `analogmem store --chips N` run: wall times and whether
    every per-chip accuracy is identical."""
    same = _per_chip(serial) == _per_chip(ray)
    rows = [[f"`{command(d)}`", f"{d['stage_wall_s']['chips']:.1f}", f"{d['wall_s']:.0f}",
             "—" if d is serial else (f"all {len(_per_chip(d))} per-chip accuracy lists identical to serial"
                                      if same else "per-chip accuracies DIFFER from serial")]
            for d in (serial, ray)]
    ratio = ray["stage_wall_s"]["chips"] / serial["stage_wall_s"]["chips"]
    return (table(["run", "chips stage (s)", "whole job (s)", "numbers"], rows)
            + f"\n\nRay / serial wall time of the chips: {ratio:.2f}.\n\n" + source(serial, ray))


@renderer("calibration")
def _calibration(doc: dict) -> str:
    rows = []
    for name, s in doc["summary"].items():
        label = _CANDIDATES.get(name)
        if label is None:
            w = int(name.rsplit("w", 1)[1])
            label = "empirical, one level's own shape" if w == 0 else f"empirical, shape pooled over ±{w} level{'s' * (w > 1)}"
        if name == doc["chosen"]:
            label = f"**{label} (kept)**"
        rows.append([label, f"{s['levels_accepted']}/{s['levels']}", f"{s['levels_accepted_exact_model']}/{s['levels']}",
                     f"{s['mean_ks']:.4f}"])
    n_fit = statistics.median(level["n_fit"] for level in doc["levels"])
    return table(["candidate", f"levels accepted at 5 %, model treated as estimated from its {n_fit:g} reads",
                  "levels accepted, model treated as exact", "mean KS statistic"], rows) + "\n\n" + source(doc)



# scripts/cards/README.md: run-to-run variation of write-verify (issue 28) -----------------------------
_LEVELS = (50, 80, 95)


@renderer("run-variation")
def _run_variation(doc: dict) -> str:
    v, c = doc["run_variation"], doc["summary"]["coverage"]
    n = c["pairs"]
    (bl, bh), (wl, wh) = v["sd_between_interval90"], v["sd_within_interval90"]
    taus = [p["joint_mode_tau"] for p in doc["per_held_out_run"]]
    head = (f"Card run variation (shift of logit p of a new run; {v['n_runs']} runs, {v['n_pairs']} held-out (run, level) "
            f"pairs): between runs σ_b = {v['sd_between']:.3f} (90 % bootstrap interval over runs {bl:.3f}–{bh:.3f}), "
            f"within a run, level to level, σ_w = {v['sd_within']:.3f} ({wl:.3f}–{wh:.3f}); the folds' joint-mode "
            f"τ = {min(taus):.3f}–{max(taus):.3f}.")
    runs = sorted({r["run"] for r in doc["rows"]})

    def cluster_se(key: str) -> float:
        """Standard error of a coverage share with the held-out runs as clusters (the pairs
        of one run share its effect): sqrt(R/(R-1) Σ_r (hits_r − p·n_r)²) / N."""
        p = sum(r[key] for r in doc["rows"]) / n
        dev = [sum(r[key] for r in doc["rows"] if r["run"] == run) - p * sum(1 for r in doc["rows"] if r["run"] == run)
               for run in runs]
        return math.sqrt(len(runs) / (len(runs) - 1) * sum(d * d for d in dev)) / n

    rows = []
    for lv in _LEVELS:
        cells = []
        for key in (f"pulses_mean_interval{lv}", f"success_rate_interval{lv}", f"pulses_mean_interval{lv}_joint_mode"):
            cells.append(f"{c[key]['covered']}/{n} = {100 * c[key]['share']:.0f} % (± {100 * cluster_se(key + '_covers'):.0f})")
        rows.append([f"{lv} %"] + cells)
    cov = table(["interval", "mean pulses covered", "success rate covered", "mean pulses covered, joint-mode τ alone"],
                rows) + ("\n\n(± one standard error of the share, the held-out runs as clusters: whole runs miss "
                         "together.)")
    width = (f"Median width of the interval of mean pulses relative to the prediction: 80 %: "
             f"{100 * c['pulses_mean_interval80_median_relative_width']:.0f} %, 95 %: "
             f"{100 * c['pulses_mean_interval95_median_relative_width']:.0f} %. Unadapted predictions within 20 %: "
             f"{c['unadapted_within_20pct']}/{n} (the {c['pairs_in_table'] - n} pairs of a run whose scheme no other run "
             "has are not predictable).")
    few = table(["first programs seen (k)", "pairs", "within 20 %, adapted", "within 20 %, same programs unadapted",
                 f"adapted, of all {c['pairs_in_table']} pairs", "median abs. error adapted", "unadapted"],
                [[k, f["pairs"], f"{f['adapted_within_20pct']}/{f['pairs']}", f"{f['unadapted_within_20pct']}/{f['pairs']}",
                  f"{f['adapted_within_20pct']}/{c['pairs_in_table']}",
                  f"{100 * f['median_abs_error_adapted']:.0f} %", f"{100 * f['median_abs_error_unadapted']:.0f} %"]
                 for k, f in doc["summary"]["few_cells"].items()])
    per = table(["held out", "σ_b from the other runs", "σ_w", "held-out pairs in the 80 % interval"],
                [[p["held_out"], f"{p['sd_between']:.3f}", f"{p['sd_within']:.3f}",
                  f"{sum(r['pulses_mean_interval80_covers'] for r in doc['rows'] if r['run'] == p['held_out'])}/"
                  f"{sum(1 for r in doc['rows'] if r['run'] == p['held_out'])}"] for p in doc["per_held_out_run"]])
    return "\n\n".join([head, cov, width, few, per, source(doc)])


@renderer("retention-law")
def _retention_law(doc: dict) -> str:
    s, law = doc["summary"], doc["law"]
    n, na = s["pairs_leave_one_bake_out"], s["pairs_adjusted_windows"]
    cov = table(["interval", f"post-bake spread covered, leave one bake out ({n} (bake, level))",
                 f"expts 5–6, law of expts 1–4 ({na})"],
                [[f"{lv} %", f"{s[f'std_post_interval{lv}_covered_lobo']}/{n}",
                  f"{s[f'std_post_interval{lv}_covered_adjusted']}/{na}"] for lv in _LEVELS])
    rows = []
    for r in doc["rows"]:
        if r["held_out"] not in ("radar-expt1", "radar-expt2", "radar-expt3", "radar-expt4"):
            continue
        lo, hi = r["std_post_interval80_S"]
        rows.append([r["held_out"], r["level"] if not r["open"] else f"{r['level']} (open)", f"{r['age_s']:.3g}",
                     f"{1e6 * r['std_pre_S']:.2f}", f"{1e6 * r['std_post_S']:.2f}", f"{1e6 * r['std_post_pred_S']:.2f}",
                     f"{1e6 * lo:.2f}–{1e6 * hi:.2f}",
                     f"{100 * (r['mean_post_S'] / r['mean_pre_S'] - 1):+.1f} %",
                     f"{100 * (r['mean_post_pred_S'] / r['mean_pre_S'] - 1):+.1f} %",
                     f"{100 * r['misread_post']:.1f} %", f"{100 * r['misread_post_pred']:.1f} %"])
    per = table(["held-out bake", "level", "age (s at T_ref)", "σ pre (µS)", "σ post: data", "law", "80 % interval",
                 "mean shift: data", "law", "misread: data", "law"], rows)
    expo = ", ".join(f"{law['spread_exponent'][k]:.3f}" for k in sorted(law["spread_exponent"], key=int))
    head = (f"Spread exponents c_L per level (σ ∝ (t/t_pre)^c_L, fitted to expts 1–4): {expo} (± "
            f"{max(law['spread_exponent_se'].values()):.3f}); level-to-level SD of ln σ {law['spread_sd_level']:.3f}, "
            f"bake-to-bake SD {law['spread_sd_experiment']:.3f}. Median |ln(law/data)| of the held-out spreads "
            f"{s['median_abs_log_error_std_lobo']:.3f}, against {s['median_abs_log_error_std_hold']:.3f} for the "
            f"pre-bake spread held; misread fraction over the held-out (bake, level): data "
            f"{100 * s['misread_post_data_lobo']:.2f} %, law {100 * s['misread_post_pred_lobo']:.2f} %.")
    return "\n\n".join([head, cov, per, source(doc)])


# docs/pruning.md (ch.2) ----------------------------------------------------------------------------
_LAP_SHOWN = (0.8, 0.4, 0.25)


@renderer("laplacian")
def _laplacian(doc: dict) -> str:
    rows = [[f"{r['n']:,}", f"{r['lambda_D']:g}", f"{r['rd_bits']:.3f}", f"{r['rate_bits']:.3f}", f"{r['gap_bits']:+.3f}",
             f"{r['index_bits']:.3f}", f"{r['sign_bits']:.3f}", f"{r['side_bits']:.3f}", f"{r['zero_fraction']:.3f}",
             f"{r['zero_fraction_optimal']:.3f}"] for r in doc["rows"] if r["lambda_D"] in _LAP_SHOWN]
    shown = ", ".join(f"{x:g}" for x in _LAP_SHOWN)
    others = ", ".join(f"{x:g}" for x in doc["settings"]["lambda_D"] if x not in _LAP_SHOWN)
    return (table(["n", "λD", "R(D) bits", "SuRP bits", "gap", "index", "sign", "side", "P(ŵ=0) SuRP", "(λD)²"], rows)
            + f"\n\nλD = {shown} shown; the JSON (and the command's output) also has λD = {others}, the geometric "
              "index cost and the MSE. " + source(doc))


def _lap_row(doc: dict, n: int, lam_d: float) -> dict:
    return next(r for r in doc["rows"] if r["n"] == n and r["lambda_D"] == lam_d)


@renderer("laplacian-notes")
def _laplacian_notes(doc: dict, bench: dict) -> str:
    n_max = max(doc["settings"]["n"])
    big = [r for r in doc["rows"] if r["n"] >= 10_000]
    ratio = [r["index_bits"] / r["rd_bits"] for r in big if r["lambda_D"] <= 0.6]
    r25 = _lap_row(doc, n_max, 0.25)
    top = max(bench["laplacian"], key=lambda r: r["n"])
    gaps = {n: _lap_row(doc, n, 0.25)["gap_bits"] for n in doc["settings"]["n"]}
    return ("- The gap to R(D) at λD = 0.25 shrinks as n grows ("
            + ", ".join(f"{g:+.2f} bits at n = {n:,}" for n, g in gaps.items())
            + "), mostly because the side information is amortised — and then levels off: at n = "
            f"{top['n']:,} SuRP needs {top['bits_per_weight']:.2f} bits, {top['bits_per_weight'] / r25['rd_bits']:.2f}× "
            "R(D) (the benchmark table below).\n"
            f"- Where it goes: at λD ≤ 0.6 and n ≥ 10,000 the index bits alone are {min(ratio):.2f}–{max(ratio):.2f}× "
            f"R(D); the sign bits add {r25['sign_bits']:.2f} bits at λD = 0.25 (n = {n_max:,}).\n"
            f"- SuRP's output is far sparser than the R(D)-optimal reconstruction ({pct(r25['zero_fraction'], 0)} zeros "
            f"vs (λD)² = {pct(r25['zero_fraction_optimal'], 0)} at λD = 0.25, n = {n_max:,}): SuRP prunes aggressively, "
            "which is what the pruning experiments want.")


@renderer("bench-pruning")
def _bench_pruning(*docs: dict) -> str:
    rows = []
    for doc in docs:
        rule = doc["settings"]["lam_rule"]
        for r in doc["laplacian"]:
            rows.append([f"`{rule}`", f"{r['n']:,}", f"{r['steps']:,}", f"{r['mae']:.4f}",
                         f"{r['bits_per_weight']:.3f}", f"{-math.log2(doc['settings']['lambda_D']):.3f}",
                         f"{r['encode_s']:.2f}", f"{r['decode_s']:.2f}", "yes" if r["decode_identical"] else "NO"])
    return (table(["λ rule", "n", "steps", "λ·MAE", "SuRP bits/sample", "R(D) bits", "encode s", "decode s",
                   "decoded = encoder's ŵ"], rows) + "\n\n" + source(*docs))


@renderer("lam-rules")
def _lam_rules(*docs: dict) -> str:
    by_rule = {d["settings"]["lam_rule"]: {(r["n"], r["lambda_D"]): r for r in d["rows"]} for d in docs}
    rules = list(by_rule)
    ref = docs[0]
    keys = [(n, x) for n in ref["settings"]["n"] if n >= 10_000 for x in ref["settings"]["lambda_D"]]
    rows = []
    for n, x in keys:
        cells = [f"{by_rule[rule][(n, x)]['rate_bits']:.3f}" if (n, x) in by_rule[rule] else "—" for rule in rules]
        rows.append([f"{n:,}", f"{x:g}", f"{-math.log2(x):.3f}", *cells])
    header = ["n", "λD", "R(D)"] + [f"`{r}`" + (" (default)" if r == "n-1" else "") for r in rules]
    return table(header, rows) + "\n\n" + source(*docs)


@renderer("lam-rule-notes")
def _lam_rule_notes(n1: dict, mean: dict, bench_mean: dict) -> str:
    a = {(r["n"], r["lambda_D"]): r["rate_bits"] for r in n1["rows"]}
    b = {(r["n"], r["lambda_D"]): r["rate_bits"] for r in mean["rows"]}
    saved = [a[k] - b[k] for k in a if k in b and k[0] >= 10_000 and k[1] <= 0.4]
    rel = [(a[k] - b[k]) / a[k] for k in a if k in b and k[0] >= 10_000 and k[1] <= 0.4]
    big = max(bench_mean["laplacian"], key=lambda r: r["n"])
    return (f"`lam_rule=\"mean\"` saves {min(saved):.2f}–{max(saved):.2f} bits at λD ≤ 0.4 "
            f"({100 * min(rel):.0f}–{100 * max(rel):.0f} %) but stays about 2 bits above R(D) at λD = 0.25 "
            f"({big['bits_per_weight']:.2f} bits at n = {big['n']:,}, the benchmark table above).")


@renderer("prune-net")
def _prune_net(doc: dict) -> str:
    rows = doc["rows"]
    by = {(r["method"], r["target"]): r for r in rows}
    methods = [("magnitude", "magnitude (one-shot)"), ("surp", "SuRP (one-shot)"),
               ("magnitude-iterative", "magnitude, iterative + retrain"), ("surp-iterative", "SuRP, iterative + retrain")]
    out = []
    for t in sorted({r["target"] for r in rows}):
        cells = [f"{100 * by[(m, t)]['accuracy']:.2f}" if (m, t) in by else "—" for m, _ in methods]
        sb = by.get(("surp", t), {}).get("surp_bits_per_weight")
        out.append([f"{t:g}", *cells, num(sb, ".3f")])
    return (f"Dense accuracy {pct(doc['dense_accuracy'])} ({doc['n_prunable']:,} prunable weights).\n\n"
            + table(["sparsity", *(h for _, h in methods), "SuRP bits/weight (one-shot)"], out) + "\n\n" + source(doc))



def _binomial_se_points(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` test examples, in points."""
    return 100 * math.sqrt(p * (1 - p) / n)


@renderer("prune-net-notes")
def _prune_net_notes(doc: dict) -> str:
    by = {(r["method"], r["target"]): r for r in doc["rows"]}
    ts = sorted({r["target"] for r in doc["rows"]})
    hi = [t for t in ts if t >= 0.9]
    one_shot = ", ".join(f"{100 * by[('surp', t)]['accuracy']:.1f} vs {100 * by[('magnitude', t)]['accuracy']:.1f} % "
                         f"at {t:g}" for t in hi)
    diffs = {t: 100 * (by[("surp-iterative", t)]["accuracy"] - by[("magnitude-iterative", t)]["accuracy"]) for t in ts}
    n_test = doc["settings"]["n_test"]
    se = _binomial_se_points(0.95, n_test)
    ahead = [t for t in ts if diffs[t] > 0]
    behind = [t for t in ts if diffs[t] < 0]
    last = ts[-1]
    verdict = ("ahead at every sparsity" if not behind else "behind at every sparsity" if not ahead else
               "ahead at " + ", ".join(f"{t:g}" for t in ahead) + " and behind at " + ", ".join(f"{t:g}" for t in behind))
    return (f"One-shot, SuRP loses to magnitude pruning at high sparsity ({one_shot}): its kept weights are "
            "themselves coarsely quantised (sums of a few thresholds, always below |w|), not exact. With retraining "
            f"between passes, iterative SuRP is {verdict} against iterative magnitude pruning ("
            + ", ".join(f"{d:+.1f}" for d in diffs.values())
            + f" points from sparsity {ts[0]:g} to {last:g}): one seed and {n_test:,} test images, whose binomial "
            f"standard error is ≈ {se:.1f} points at 95 % accuracy (≈ {2 * math.sqrt(2) * se:.1f} points for two "
            f"standard errors of a difference), so "
            + ("these differences are within noise. " if max(map(abs, diffs.values())) <= 2 * math.sqrt(2) * se
               else "only the largest of these differences stands out of the noise. ")
            + "Its "
            f"bitstream describes the whole sparse network in {by[('surp-iterative', last)]['surp_bits_per_weight']:.2f} "
            f"bits per weight at {100 * last:g} % sparsity (before retraining, the last pass gives "
            f"{pct(by[('surp-iterative', last)]['accuracy_before_retrain'], 1)}).")



# docs/dsgd.md (ch.5) -------------------------------------------------------------------------------
_DSGD = {"dense": "uncompressed DDP", "topk": "top-k + EF", "randk": "random-k + EF", "rtopk": "rTop-k + EF"}


def _dsgd_label(method: str, r_factor: float | None = None) -> str:
    if method.startswith("rtopk"):
        return f"rTop-k + EF (r = {r_factor:g}k)"
    return _DSGD.get(method, method)


@renderer("dsgd-runs")
def _dsgd_runs(doc: dict) -> str:
    cfg = doc["settings"]
    rows = []
    for run in doc["runs"]:
        bits = run["bits"]
        rows.append([_dsgd_label(run["method"], cfg["r_factor"]), f"{run['k_per_step']:,}", f"{run['r_per_step']:,}",
                     run["steps"], pct(run["final_test_accuracy"]), f"{bits['bits_sent'] / 1e6:,.2f}",
                     f"{run['bits_per_step']:,}", f"{run['compression_vs_dense']:,.1f}",
                     f"{bits['bits_log2_alternative'] / 1e6:,.2f}", "yes" if run["replicas_identical"] else "NO"])
    return (table(["method", "k / step", "r / step", "steps", "final test acc.", "Mbit sent / rank", "bits / step",
                   "× fewer than dense", "Mbit, log2 n-bit indices", "replicas identical"], rows)
            + "\n\n" + source(doc))


@renderer("dsgd-notes")
def _dsgd_notes(doc: dict) -> str:
    cfg = doc["settings"]
    runs = {r["method"]: r for r in doc["runs"]}
    target = cfg["target_accuracy"]
    reach = ", ".join(f"{_dsgd_label(m, cfg['r_factor']).replace(' + EF', '')} "
                      + ("never" if r["bits_to_target_accuracy"] is None else f"{r['bits_to_target_accuracy'] / 1e6:.1f} Mbit")
                      for m, r in runs.items())
    first = {m: r["history"][0] for m, r in runs.items() if r["history"]}
    step = next(iter(first.values()))["step"]
    order = sorted(runs, key=lambda m: -(runs[m]["final_test_accuracy"] or 0))
    return (f"Bits per rank to first reach {target:.0%} test accuracy: {reach} (in {cfg['epochs']} epochs). "
            f"At the first evaluation (step {step}): "
            + ", ".join(f"{_dsgd_label(m, cfg['r_factor']).replace(' + EF', '')} {pct(h['test_accuracy'], 1)}"
                        for m, h in first.items())
            + ". Final accuracy, best first: "
            + " ≥ ".join(f"{_dsgd_label(m, cfg['r_factor']).replace(' + EF', '')} {pct(runs[m]['final_test_accuracy'], 1)}"
                         for m in order)
            + f" — one seed, {doc['n_test']:,} test images (binomial standard error ≈ "
              f"{_binomial_se_points(0.96, doc['n_test']):.1f} points at 96 %); over three seeds see below.")


def _bench_dsgd_label(method: str) -> str:
    if method.startswith("rtopk"):
        return "rTop-k + EF, r = " + method.split("r=", 1)[1]
    return _DSGD.get(method, method)


@renderer("bench-dsgd")
def _bench_dsgd(doc: dict) -> str:
    rows = []
    for r in doc["rows"]:
        f, m = r["final_test_accuracy"], r["mean_test_accuracy_over_run"]
        rows.append([f"{r['density']:g}", _bench_dsgd_label(r["method"]), f"{pct(f['mean'])} ± {pct(f['std'])}",
                     f"{pct(m['mean'])} ± {pct(m['std'])}", f"{r['bits_sent_per_rank'] / 1e6:,.2f}"])
    sel = doc["selection_ms"]
    return (table(["density", "method", "final test acc.", "mean acc. over the run", "Mbit sent / rank"], rows)
            + f"\n\nSelection cost on a 114,314-coordinate bucket (k = 1 %, r = 4k, one thread, median): top-k "
              f"{sel['topk']:.2f} ms, random-k {sel['randk']:.2f} ms, rTop-k {sel['rtopk']:.2f} ms.\n\n" + source(doc))


@renderer("bench-dsgd-notes")
def _bench_dsgd_notes(doc: dict) -> str:
    by = {(r["density"], r["method"]): r for r in doc["rows"]}
    seeds = doc["settings"]["seeds"]
    parts, beyond = [], []
    for d in doc["settings"]["densities"]:
        top = by[(d, "topk")]
        for method in sorted(m for (dd, m) in by if dd == d and m.startswith("rtopk")):
            r = by[(d, method)]
            name = _bench_dsgd_label(method).replace("rTop-k + EF, ", "")
            diff = {}
            for key, what in (("final_test_accuracy", "final"), ("mean_test_accuracy_over_run", "mean over the run")):
                diff[what] = 100 * (r[key]["mean"] - top[key]["mean"])
                if abs(diff[what]) > 100 * max(r[key]["std"], top[key]["std"]):
                    beyond.append(f"{name} at density {d:g}, {what} ({diff[what]:+.2f})")
            parts.append(f"{name} at density {d:g}: " + ", ".join(f"{v:+.2f} {k}" for k, v in diff.items()))
    randk_gap = [100 * (by[(d, "topk")]["final_test_accuracy"]["mean"] - by[(d, "randk")]["final_test_accuracy"]["mean"])
                 for d in doc["settings"]["densities"]]
    verdict = ("every difference is within one standard deviation over the seeds" if not beyond else
               "beyond one standard deviation over the seeds: " + "; ".join(beyond) + "; the others are within it")
    return (f"rTop-k minus top-k, in points (mean over {len(seeds)} seeds): " + "; ".join(parts) + f" — {verdict}. "
            "Top-k is ahead of random-k by " + " and ".join(f"{g:.1f}" for g in randk_gap)
            + " points final at the two densities.")



# docs/federated.md (ch.6-7) ----------------------------------------------------------------------
def _fl_k(cfg: dict) -> int:
    """KLMS candidates per block, K = 2^(⌈budget⌉ + oversample bits)."""
    return 2 ** (math.ceil(cfg["kl_budget_bits"]) + cfg["oversample_bits"])


def _fl_label(run: dict) -> str:
    cfg = run["settings"]
    method = cfg["method"]
    if method == "fedavg":
        return "FedAvg (32-bit floats)"
    if method == "fedpm":
        return "FedPM (constriction-coded masks)"
    if method == "signsgd-klms":
        return "SignSGD-KLMS"
    k = _fl_k(cfg)
    if cfg["boundaries"] == "predicted":
        where = "predicted boundaries"
    elif cfg["boundary_refresh"] == 1:
        where = "lengths sent"
    else:
        where = f"lengths sent every {cfg['boundary_refresh']}th round"
    default = cfg["oversample_bits"] == 0 and cfg["boundaries"] == "predicted"
    return f"KLMS, K = {k}, {where}" + (" (the command's default)" if default else "")


def _fl_rows(run: dict) -> list[dict]:
    return run["rounds"][1:]


@renderer("fl-compare")
def _fl_compare(doc: dict) -> str:
    target = doc["target_accuracy"]
    rows = []
    for run in doc["runs"]:
        s = run["summary"]
        first = run.get("first_reach") or {"round": None}
        reach = ("never (best " + pct(s["best_test_accuracy"], 1) + ")" if first["round"] is None
                 else f"{first['cumulative_bpp']:.3g} (round {first['round']})")
        rows.append([_fl_label(run), f"`{run['label']}`", run["settings"]["rounds"], pct(s["final_test_accuracy"]),
                     pct(s["best_test_accuracy"]), f"{s['mean_uplink_bpp']:.4g}", reach])
    return (table(["method", "`fl compare` entry", "rounds", "final acc.", "best acc.", "mean uplink bpp",
                   f"bits/param to first reach {pct(target, 1)}"], rows) + "\n\n" + source(doc))


def _fl_runs(doc: dict, method: str, **settings) -> list[dict]:
    return [r for r in doc["runs"] if r["settings"]["method"] == method
            and all(r["settings"][k] == v for k, v in settings.items())]


@renderer("fl-notes")
def _fl_notes(doc: dict) -> str:
    out = []
    fedpm = _fl_runs(doc, "fedpm")
    if fedpm:
        run = fedpm[0]
        rows = _fl_rows(run)
        p_hat = [r["p_hat_mean"] for r in rows]
        excess = max(r["uplink_bpp"] - r["bound_bpp_mean"] for r in rows)
        s = run["summary"]
        out.append(f"- FedPM stays at ≈ 1 bpp here because the masks it samples keep p̂ ≈ {min(p_hat):.2f}–"
                   f"{max(p_hat):.2f} (h₂ ≈ 1); the measured rate is at most {excess:.4f} bpp above the paper's bound "
                   f"h₂(p̂) + log₂N/N in every round. The final model (seed + mask [θ > ½], "
                   f"{pct(s['final_mask_density'], 0)} of the weights kept) codes to {s['final_model_mask_bpp']:.3f} bpp.")
    klms = {(r["settings"]["oversample_bits"], r["settings"]["boundaries"], r["settings"]["boundary_refresh"]): r
            for r in _fl_runs(doc, "klms")}
    pred = {_fl_k(r["settings"]): r for k, r in klms.items() if k[1] == "predicted"}
    sent = {_fl_k(r["settings"]): r for k, r in klms.items() if k[1] == "sent" and k[2] == 1}
    if pred:
        def at(run, t):
            rows = _fl_rows(run)
            return rows[min(t, len(rows)) - 1]["uplink_bpp"]
        kl = [r["kl_bpp_mean"] for run in klms.values() for r in _fl_rows(run)]
        blocks = [r["n_blocks_mean"] for run in pred.values() for r in _fl_rows(run)]
        some = next(iter(pred.values()))
        bbits = [r["boundary_bits_mean"] for r in _fl_rows(some)]
        n = some["summary"]["n_params"]
        last = some["settings"]["rounds"]
        marks = sorted({1, last // 2, last})
        rates = "; ".join(f"K = {o} sends " + ", ".join(f"{at(run, t):.3g}" for t in marks)
                          for o, run in sorted(pred.items()))
        after = f"{min(bbits[1:]):.0f}" + (f"–{max(bbits[1:]):.0f}" if min(bbits[1:]) != max(bbits[1:]) else "")
        text = (f"- KLMS codes {min(kl):.3g}–{max(kl):.3g} bits of KL per parameter. With predicted boundaries the "
                f"boundary cost is the 16-bin table ({bbits[0]:.0f} bits in round 1, {after} "
                f"bits after: {max(bbits[1:]) / n:.4f} bpp), and the rate is essentially log₂K bits per block of about "
                f"{some['settings']['kl_budget_bits']:g} bits of KL ({min(blocks):,.0f}–{max(blocks):,.0f} blocks per "
                f"message): in rounds {', '.join(map(str, marks))} {rates} bpp.")
        if sent:
            first = {o: _fl_rows(r)[0] for o, r in sent.items()}
            text += (" With the lengths sent, most of the rate is the 8-bit block lengths ("
                     + ", ".join(f"{first[o]['boundary_bits_mean'] / n:.3f} of {first[o]['uplink_bpp']:.3f} bpp in round 1 "
                                 f"at K = {o}" for o in sorted(first)) + ").")
            cmp = []
            for o in sorted(set(pred) & set(sent)):
                a, b = pred[o]["summary"], sent[o]["summary"]
                cmp.append(f"K = {o}: final {pct(a['final_test_accuracy'], 1)} predicted vs "
                           f"{pct(b['final_test_accuracy'], 1)} sent, best {pct(a['best_test_accuracy'], 1)} vs "
                           f"{pct(b['best_test_accuracy'], 1)}, for {b['mean_uplink_bpp'] / a['mean_uplink_bpp']:.1f}× "
                           "fewer uplink bits with predicted boundaries")
            text += " Predicted against sent boundaries: " + "; ".join(cmp) + "."
        out.append(text)
    return "\n".join(out)



# docs/privacy.md (ch.8-9) ------------------------------------------------------------------------
@renderer("rrsc")
def _rrsc(doc: dict) -> str:
    from analogmem.privacy.sweeps import format_rrsc_table  # numpy + scipy; the paper's values live there

    return format_rrsc_table(doc["points"]) + "\n\n" + source(doc)


def _rrsc_paper_pairs(doc: dict) -> list[tuple[dict, float, str]]:
    """(row, paper value, sweep) for the paper's 16 plotted points ((6, 6) is in both sweeps)."""
    from analogmem.privacy.sweeps import PAPER_RRSC_B_EQ_EPS, PAPER_RRSC_EPS6, paper_points

    by = {(r["bits"], r["epsilon_nats"]): r for r in doc["points"]}
    return [(by[p], (PAPER_RRSC_EPS6 if i < 8 else PAPER_RRSC_B_EQ_EPS)[p[0]], "ε = 6" if i < 8 else "b = ε")
            for i, p in enumerate(paper_points()) if p in by]


@renderer("rrsc-notes")
def _rrsc_notes(doc: dict) -> str:
    sm, pts = doc["summary"], doc["points"]
    pairs = _rrsc_paper_pairs(doc)
    dev = sorted(((r["rrsc_mse"]["mean"] / p - 1, r, sweep) for r, p, sweep in pairs), key=lambda x: -abs(x[0]))
    ratio = [r["sqkr_mse"]["mean"] / r["rrsc_mse"]["mean"] for r in pts]
    ks = [(r["bits"], r["epsilon_nats"], r["rrsc_k"]) for r in pts if r["rrsc_k"] != 1]
    hits, n = sm["rrsc_formula_in_ci95"].split("/")
    consistent = sm["rrsc_formula_consistent_bonferroni_5pct"]
    lines = [
        f"- RRSC vs paper: mean |ours/paper − 1| = **{pct(sm['rrsc_mean_abs_rel_diff_vs_paper'], 1)}** over the "
        f"{len(pairs)} plotted points (the exact formula (C² − 1)/n alone: "
        f"{pct(sm['rrsc_formula_mean_abs_rel_diff_vs_paper'], 1)}); the largest single deviations are "
        + ", ".join(f"{d:+.1%} at b = {r['bits']}, ε = {r['epsilon_nats']:g}" for d, r, _ in dev[:2]) + ".",
        f"- (C² − 1)/n lies inside our 95 % interval at {hits} of the {n} distinct points; the smallest two-sided "
        f"t-test p-value is {sm['rrsc_formula_min_p_value']:.2g}, "
        + ("consistent with the formula after a Bonferroni correction" if consistent
           else "not consistent with the formula even after a Bonferroni correction") + f" (0.05/{n}).",
        ("- RRSC beats SQKR at every point" if sm.get("rrsc_beats_sqkr_everywhere") else "- RRSC does not beat SQKR at "
         "every point") + f" (SQKR's MSE is {min(ratio):.1f}× to {max(ratio):.1f}× RRSC's).",
        f"- PrivUnitG vs its own closed form: mean {pct(sm['privunitg_mean_abs_rel_diff_vs_closed_form'], 1)} "
        f"(smallest p = {sm['privunitg_closed_form_min_p_value']:.2g}, "
        + ("Bonferroni-consistent" if sm["privunitg_closed_form_consistent_bonferroni_5pct"] else "NOT Bonferroni-consistent")
        + f"); vs the paper: {pct(sm['privunitg_mean_abs_rel_diff_vs_paper'], 1)}.",
        "- The optimal k is 1" + ("" if not ks else " except at " + " and ".join(
            f"b = {b}, ε = {e:g} (k = {k})" for b, e, k in ks)) + ".",
    ]
    return "\n".join(lines)


@renderer("rrsc-monotone")
def _rrsc_monotone(doc: dict) -> str:
    from analogmem.privacy.sweeps import PAPER_RRSC_EPS6

    by = {(r["bits"], r["epsilon_nats"]): r for r in doc["points"]}
    f7, f8 = by[(7, 6.0)]["rrsc_mse_formula"], by[(8, 6.0)]["rrsc_mse_formula"]
    p7, p8 = PAPER_RRSC_EPS6[7], PAPER_RRSC_EPS6[8]
    paper = "above" if p8 > p7 else "below"
    exact = "decreases" if f8 < f7 else "increases"
    return (f"Observations: the paper's b = 8, ε = 6 value ({p8:.4f}) is {paper} its b = 7 value ({p7:.4f}); the exact MSE "
            f"{exact} ({sig(f7)} → {sig(f8)})"
            + (", so the paper's non-monotone step is run-to-run noise." if p8 > p7 and f8 < f7 else "."))


@renderer("rrsc-more-runs")
def _rrsc_more_runs(doc: dict) -> str:
    sm = doc["summary"]
    st = doc["settings"]
    hits, n = sm["rrsc_formula_in_ci95"].split("/")
    return (f"With {st['runs']} runs (seed {st['seed']}): (C² − 1)/n inside the 95 % interval "
            f"at {hits}/{n} points, mean |ours/paper − 1| = {pct(sm['rrsc_mean_abs_rel_diff_vs_paper'], 1)}. "
            + source(doc))


_DATASET_INFO = {"digits": "`load_digits`", "mnist5k": "MNIST-5k"}


@renderer("noisy")
def _noisy(doc: dict) -> str:
    from analogmem.privacy.noisy_compression import format_noisy_table  # numpy + scipy

    return format_noisy_table(doc["rows"]) + "\n\n" + source(doc)


def _noisy_by(doc: dict) -> dict:
    return {(r["release"], r["noise_std"]): r for r in doc["rows"]}


@renderer("noisy-notes")
def _noisy_notes(digits: dict, mnist: dict) -> str:
    compressed = ("noisy+dct", "noisy+gaussian-rd")
    rates = [r["rate_bpp"] for d in (digits, mnist) for r in d["rows"] if r["release"] in compressed]
    sig_ = sorted({r["noise_std"] for r in mnist["rows"] if r["noise_std"] > 0})
    ratio = [_noisy_by(d)[("noisy+dct", s)]["rate_bpp"] / _noisy_by(d)[("noisy+gaussian-rd", s)]["rate_bpp"]
             for d in (digits, mnist) for s in sig_ if s <= 0.5]

    def gap_to_clean(doc, max_sigma):
        by = _noisy_by(doc)
        clean = by[("clean", 0.0)]["test_accuracy"]
        return 100 * max(clean - by[(rel, s)]["test_accuracy"] for rel in compressed for s in sig_ if s <= max_sigma)

    def vs_noisy(doc):
        by = _noisy_by(doc)
        return [s for s in sig_ if all(by[(rel, s)]["test_accuracy"] >= by[("noisy", s)]["test_accuracy"] for rel in compressed)]

    bm, bd = _noisy_by(mnist), _noisy_by(digits)
    top = sig_[-1]
    at_or_above = vs_noisy(mnist)
    lines = [
        f"- Storage: the compressed releases take {min(rates):.2f}–{max(rates):.1f} bpp against "
        f"{bd[('clean', 0.0)]['rate_bpp']:.2f} (digits) and {bm[('clean', 0.0)]['rate_bpp']:.0f} (MNIST) bpp; the R(D) "
        f"compressor (ideal) needs {min(ratio):.1f}–{max(ratio):.1f}× fewer bits than the practical DCT coder at σ ≤ 0.5.",
        f"- Accuracy on MNIST: the compressed releases are within {gap_to_clean(mnist, 0.25):.1f} points of the clean "
        f"model up to σ = 0.25 and within {gap_to_clean(mnist, 0.5):.1f} points up to σ = 0.5; both are at or above "
        "the uncompressed noisy release at σ = " + (", ".join(f"{s:g}" for s in at_or_above) or "no σ")
        + f" (σ = {top:g}: noisy {pct(bm[('noisy', top)]['test_accuracy'], 1)}, DCT "
          f"{pct(bm[('noisy+dct', top)]['test_accuracy'], 1)}, R(D) {pct(bm[('noisy+gaussian-rd', top)]['test_accuracy'], 1)}).",
        f"- Accuracy on digits: within {gap_to_clean(digits, 0.25):.1f} points of clean up to σ = 0.25; at σ = 0.5 "
        f"noisy-only {pct(bd[('noisy', 0.5)]['test_accuracy'], 1)}, DCT {pct(bd[('noisy+dct', 0.5)]['test_accuracy'], 1)}, "
        f"R(D) {pct(bd[('noisy+gaussian-rd', 0.5)]['test_accuracy'], 1)}; at σ = {top:g} the "
        f"{digits['rows'][0]['n_train']:,} training images are too few for the DCT coder "
        f"({pct(bd[('noisy+dct', top)]['test_accuracy'], 0)}; it keeps few positions), the R(D) release reaches "
        f"{pct(bd[('noisy+gaussian-rd', top)]['test_accuracy'], 0)}.",
        f"- Privacy proxy: at equal noise the compressed releases are less re-identifiable than the noisy images alone "
        f"(MNIST σ = {top:g}: {pct(bm[('noisy', top)]['reidentification_rate'], 0)} → "
        f"{pct(bm[('noisy+dct', top)]['reidentification_rate'], 0)} DCT / "
        f"{pct(bm[('noisy+gaussian-rd', top)]['reidentification_rate'], 0)} R(D); digits σ = 0.5: "
        f"{pct(bd[('noisy', 0.5)]['reidentification_rate'], 0)} → {pct(bd[('noisy+dct', 0.5)]['reidentification_rate'], 0)}"
        f" / {pct(bd[('noisy+gaussian-rd', 0.5)]['reidentification_rate'], 0)}). Re-identification by nearest neighbour "
        "is a heuristic proxy, not a formal privacy guarantee.",
    ]
    return "\n".join(lines)



# docs/deltazip.md (ch.4) ---------------------------------------------------------------------------
def _dz_rows(doc: dict) -> dict[str, dict]:
    return {r["model"]: r for r in doc["rows"]}


def _dz_label(model: str, st: dict) -> str:
    spars = f"{100 * st['sparsity']:g} %"
    return {"gptzip": f"GPT-Zip ({st['bits']} bits, {spars})", "magnitude-rtn": f"magnitude + RTN ({st['bits']} bits, {spars})",
            "bitdelta": "BitDelta (1 bit)", "rtn": f"RTN ({st['bits']} bits, dense)"}.get(model, model)


def _gap_closed(loss: float, rows: dict) -> float:
    """Fraction of the base → finetuned loss gap a compressed delta keeps."""
    base, ft = rows["base"]["heldout_loss_nats"], rows["finetuned"]["heldout_loss_nats"]
    return (base - loss) / (base - ft)


@renderer("deltazip")
def _deltazip(doc: dict) -> str:
    st, out = doc["settings"], []
    for r in doc["rows"]:
        loss = f"{r['heldout_loss_nats']:.4f}"
        if "file_bytes" in r:
            out.append([_dz_label(r["model"], st), loss, f"{r['perplexity']:.3f}", f"{r['file_bytes']:,}",
                        f"{r['ratio_vs_fp16_delta']:.1f}×", f"{r['ratio_compressed_layers']:.1f}×",
                        f"{r['bits_per_weight']:.3f}"])
        else:
            out.append([r["model"], loss, f"{r['perplexity']:.3f}", "—", "—", "—", "—"])
    trained = doc["model"].get("trained_now") or []
    note = (f" (That run also trained the demo {' and '.join(trained)} model{'s' * (len(trained) > 1)}, once; "
            "later runs load them from the cache.)" if trained else "")
    return (table(["model", "held-out loss (nats/byte)", "perplexity/byte", "file (bytes)", "ratio vs fp16 delta",
                   "ratio (linear layers)", "bits/weight (linear)"], out) + "\n\n" + source(doc) + note)


@renderer("deltazip-notes")
def _deltazip_notes(doc: dict) -> str:
    rows = _dz_rows(doc)
    g, m, b = rows["gptzip"], rows["magnitude-rtn"], rows["bitdelta"]
    br = g["breakdown_bytes"]
    return (f"At the same size ({g['file_bytes']:,} vs {m['file_bytes']:,} bytes) GPT-Zip closes "
            f"{pct(_gap_closed(g['heldout_loss_nats'], rows), 0)} of the loss gap between base and finetuned model, "
            f"magnitude + RTN {pct(_gap_closed(m['heldout_loss_nats'], rows), 0)}. BitDelta closes "
            f"{pct(_gap_closed(b['heldout_loss_nats'], rows), 0)} with {b['file_bytes'] / g['file_bytes']:.1f}× the bytes. "
            f"Of GPT-Zip's {g['file_bytes']:,} bytes, {br['mask']:,} are positions (entropy-coded masks), "
            f"{br['codes']:,} codes, {br['scale'] + br['zero']:,} row scales, {br['dense']:,} the float16 deltas of the "
            f"blocks' biases and layer norms, {br['header'] + br['checksum']:,} header and checksum. Compressing took "
            f"{g['seconds']:.1f} s on the CPU ({doc['model']['calibration_sequences']} × "
            f"{doc['model']['calibration_seq_len']} calibration tokens; one run on the shared 2-core machine named "
            "under the table, so a loose figure).")


def _fmt_time(t: float) -> str:
    for unit, span in (("year", 365 * 86400.0), ("day", 86400.0), ("h", 3600.0)):
        if t >= span:
            n = t / span
            return f"{n:g} {unit}" + ("s" if unit != "h" and n != 1 else "")
    return f"{t:g} s"


@renderer("deltazip-store")
def _deltazip_store(doc: dict) -> str:
    rows = doc["store_rows"]
    head = rows[0]
    out = [[_fmt_time(r["t_s"]), pct(r["code_error_rate"]), f"{r['heldout_loss_nats']:.4f}"] for r in rows]
    return (f"The GPT-Zip delta's codes on 4-level cells (`{head['card']}`, BCH t = {head['ecc_t']}; "
            f"{head['analog_cells']:,} cells):\n\n"
            + table(["read at", "codes read wrong", "held-out loss (nats/byte)"], out) + "\n\n" + source(doc))


@renderer("deltazip-other-cards")
def _deltazip_other_cards(*docs: dict) -> str:
    out = []
    for doc in docs:
        out += [[f"`{r['card']}`", r["ecc_t"], f"{r['analog_cells']:,}", _fmt_time(r["t_s"]), pct(r["code_error_rate"]),
                 f"{r['heldout_loss_nats']:.4f}"] for r in doc["store_rows"]]
    return (table(["card", "BCH t", "cells", "read at", "codes read wrong", "held-out loss (nats/byte)"], out)
            + "\n\n" + source(*docs))


def _bench_dz(doc: dict) -> dict[tuple[str, float], dict]:
    return {(r["model"].rsplit("@", 1)[0], r["sparsity"]): r for r in doc["rows"] if "@" in r["model"]}


@renderer("bench-deltazip")
def _bench_deltazip(doc: dict) -> str:
    by = _bench_dz(doc)
    rows = _dz_rows(doc)
    out = []
    for sp in doc["provenance"]["settings"]["sparsities"]:
        g, m = by[("gptzip", sp)], by[("magnitude-rtn", sp)]
        best = "**{:.4f}**"
        gl = best.format(g["heldout_loss_nats"]) if g["heldout_loss_nats"] < m["heldout_loss_nats"] else f"{g['heldout_loss_nats']:.4f}"
        ml = best.format(m["heldout_loss_nats"]) if m["heldout_loss_nats"] < g["heldout_loss_nats"] else f"{m['heldout_loss_nats']:.4f}"
        gd, gm, mm = by[("gptzip-gridfit-delta", sp)], by[("gptzip-minmax", sp)], by[("magnitude-rtn-minmax", sp)]
        out.append([f"{100 * sp:g} %", f"{g['file_bytes']:,} / {m['file_bytes']:,}", gl, ml, f"{gd['heldout_loss_nats']:.4f}",
                    f"{gm['heldout_loss_nats']:.4f} ({gm['file_bytes']:,})", f"{mm['heldout_loss_nats']:.4f} ({mm['file_bytes']:,})"])
    b = rows["bitdelta"]
    return (table(["sparsity", "file bytes (both)", "GPT-Zip", "magnitude + RTN",
                   "GPT-Zip, grid fitted to Δ first (SparseGPT order)", "GPT-Zip, min–max grid (bytes)",
                   "magnitude + RTN, min–max grid (bytes)"], out)
            + f"\n\n(held-out loss in nats/byte; finetuned {rows['finetuned']['heldout_loss_nats']:.4f}, base "
              f"{rows['base']['heldout_loss_nats']:.4f}, BitDelta {b['heldout_loss_nats']:.4f} at {b['file_bytes']:,} "
              "bytes.) " + source(doc))


@renderer("bench-deltazip-notes")
def _bench_deltazip_notes(doc: dict) -> str:
    by = _bench_dz(doc)
    sps = doc["provenance"]["settings"]["sparsities"]
    wins = [sp for sp in sps if by[("gptzip", sp)]["heldout_loss_nats"] < by[("magnitude-rtn", sp)]["heldout_loss_nats"]]
    lost = [sp for sp in sps if by[("gptzip-gridfit-delta", sp)]["heldout_loss_nats"]
            >= by[("magnitude-rtn", sp)]["heldout_loss_nats"]]
    top = max(sps)
    mm = by[("gptzip-minmax", top)]
    verdict = ("beats magnitude + RTN at every sparsity at the same size" if len(wins) == len(sps) else
               "beats magnitude + RTN at the same size at sparsity " + ", ".join(f"{100 * s:g} %" for s in wins))
    return (f"With the default grid GPT-Zip {verdict}. Fitting the grid to the delta before the sweep gives the gain "
            "away" + (" (no better than magnitude + RTN) at " + ", ".join(f"{100 * s:g} %" for s in lost) if lost else "")
            + f". On GPTQ's min–max grid many kept entries round to its zero level and are dropped from the index, so "
              f"the file is smaller ({100 * top:g} %: {mm['file_bytes']:,} bytes, {mm['ratio_vs_fp16_delta']:.1f}× vs the "
              f"float16 delta, {mm['ratio_compressed_layers']:.1f}× on the linear layers) at a loss of "
              f"{mm['heldout_loss_nats']:.4f} against {by[('gptzip', top)]['heldout_loss_nats']:.4f}.")


def _lr_line(lr: float, default: bool, rows: dict, by: dict, sps: list[float]) -> list[str]:
    def cell(method):
        vals = []
        for sp in sps:
            a, b = by[(method, sp)]["heldout_loss_nats"], by[("magnitude-rtn" if method == "gptzip" else "gptzip", sp)]["heldout_loss_nats"]
            vals.append(f"**{a:.4f}**" if a < b else f"{a:.4f}")
        return " / ".join(vals)
    return [f"{lr:g}" + (" (default)" if default else ""), f"{rows['finetuned']['heldout_loss_nats']:.4f}",
            f"{rows['base']['heldout_loss_nats']:.4f}", " / ".join(f"{100 * s:g} %" for s in sps), cell("gptzip"),
            cell("magnitude-rtn")]


@renderer("deltazip-lr")
def _deltazip_lr(doc: dict) -> str:
    sps = doc["provenance"]["settings"]["lr_sparsities"]
    runs = [(doc["default_finetune_lr"], True, _dz_rows(doc), _bench_dz(doc))]
    runs += [(r["finetune_lr"], False, _dz_rows(r), _bench_dz(r)) for r in doc["finetune_lr_runs"]]
    runs.sort(key=lambda x: x[0])
    out = [_lr_line(lr, d, rows, by, sps) for lr, d, rows, by in runs]
    kept = []
    for lr, _, rows, by in runs:
        top = max(sps)
        kept.append(f"{lr:g}: GPT-Zip keeps {pct(_gap_closed(by[('gptzip', top)]['heldout_loss_nats'], rows), 0)} and "
                    f"magnitude + RTN {pct(_gap_closed(by[('magnitude-rtn', top)]['heldout_loss_nats'], rows), 0)} of the "
                    f"finetuning gain ({rows['base']['heldout_loss_nats'] - rows['finetuned']['heldout_loss_nats']:.2f} "
                    "nats/byte)")
    return (table(["finetune lr", "finetuned", "base", "sparsity", "GPT-Zip", "magnitude + RTN"], out)
            + f"\n\nAt {100 * max(sps):g} % sparsity and 2 bits, by finetune learning rate: " + "; ".join(kept) + ". "
            + source(doc))


if __name__ == "__main__":
    sys.exit(main())
