"""The command line: the demo runs end to end and writes its JSON and figure."""

from __future__ import annotations

import json
import subprocess
import sys

from analogmem.cli import main


def test_demo_writes_json_and_plot(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["cells", "--cells", "20000", "--out", str(out), "--quiet", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "symbol error rate" in printed
    results = json.loads((out / "demo.json").read_text())
    png = (out / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(results["devices"]) == {"pcm-nandakumar2019", "rram-wan2022"}
    pcm = results["devices"]["pcm-nandakumar2019"]["reads"]
    assert [r["time_s"] for r in pcm] == results["times_s"]
    # physics visible in the numbers: PCM errors grow with drift; 8 levels at 1 s are
    # mostly read correctly
    assert pcm[0]["symbol_error_rate"] < 0.3
    assert pcm[-1]["symbol_error_rate"] > pcm[0]["symbol_error_rate"]
    assert pcm[-1]["level_mean_over_target"][4] < 0.7  # 10 years of drift, uncompensated
    # same seed, same numbers
    again = tmp_path / "again.json"
    assert main(["cells", "--cells", "20000", "--out", str(out), "--json", str(again), "--quiet", "--seed", "3"]) == 0
    for name, dev in json.loads(again.read_text())["devices"].items():
        assert dev["reads"] == results["devices"][name]["reads"]


def test_devices_and_info(tmp_path, capsys):
    assert main(["devices", "--json", str(tmp_path / "d.json")]) == 0
    rows = json.loads((tmp_path / "d.json").read_text())["devices"]
    assert {r["name"] for r in rows} >= {"pcm-nandakumar2019", "rram-wan2022"}
    assert main(["info"]) == 0
    assert '"openmp": true' in capsys.readouterr().out


def test_console_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "analogmem", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("analogmem ")


def test_every_command_is_one_row_of_commands_and_help_imports_none_of_them():
    """``analogmem -h`` lists every command of ``cli.COMMANDS`` with its summary and imports no
    command module (so none of torch, Flower, PyVISA); running one imports only its own."""
    code = """
import sys
from analogmem.cli import COMMANDS, main
try:
    main(["-h"])
except SystemExit:
    pass
heavy = [m for m in ("torch", "flwr", "pyvisa", "transformers", "analogmem.jobs.store_resnet",
                     "analogmem.federated.cli", "analogmem.instrument.cli") if m in sys.modules]
print("HEAVY", heavy)
assert main(["devices"]) == 0
print("AFTER", [m for m in ("analogmem.privacy.cli", "analogmem.pruning.cli") if m in sys.modules])
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    from analogmem.cli import COMMANDS

    for name, (target, summary) in COMMANDS.items():
        assert f"    {name}" in res.stdout and summary.split()[0] in res.stdout, name
        module, _, function = target.partition(":")
        assert function, f"{name}: {target!r} is not module:function"
    assert "HEAVY []" in res.stdout and "AFTER []" in res.stdout, res.stdout[-400:]
