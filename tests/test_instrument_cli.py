"""`analogmem bench program|read|characterise|serve` (the subcommand wired through
``analogmem.instrument.cli.add_subparser``)."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("pyvisa_py")

from analogmem.instrument import BenchConfig, InstrumentBench, ScpiEmulatorServer  # noqa: E402
from analogmem.instrument.characterise import read_table  # noqa: E402
from analogmem.instrument.cli import add_subparser  # noqa: E402

CARD = "pcm-nandakumar2019"
PNG = b"\x89PNG\r\n\x1a\n"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", *argv])
    return int(args.func(args) or 0)


@pytest.fixture(scope="module")
def server():
    with ScpiEmulatorServer(CARD, rows=16, cols=16, seed=11) as srv:
        yield srv


def test_program_read_characterise(server, tmp_path, capsys):
    common = ["--resource", server.resource, "--rows", "16", "--cols", "16", "--no-progress"]
    assert run("program", *common, "--device", CARD, "--cells", "0-255", "--out", str(tmp_path / "p.csv"),
               "--json", str(tmp_path / "p.json"), "--plot", str(tmp_path / "p.png")) == 0
    s = json.loads((tmp_path / "p.json").read_text())
    assert s["cells"] == 256 and s["success_rate"] > 0.95 and s["identity"]["manufacturer"] == "analogmem"
    t = read_table(tmp_path / "p.csv")
    assert len(t["cell"]) == 256 and np.median(np.abs(t["read_value_S"] / t["target_S"] - 1)) < 0.1
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG

    assert run("read", *common, "--cells", "0-99", "--out", str(tmp_path / "r.csv"), "--json", str(tmp_path / "r.json"),
               "--plot", str(tmp_path / "r.png")) == 0
    assert json.loads((tmp_path / "r.json").read_text())["cells"] == 100
    # a new session does not know when the cells were programmed: no time_s column rather than an
    # empty one; the device is the card the emulator serves, not the instrument's model (issue 26)
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "cell,read_value_S,device" and lines[1].endswith(f",{CARD}")

    assert run("characterise", *common, "--device", CARD, "--levels", "3", "--cells-per-level", "20",
               "--times", "0,100", "--out", str(tmp_path / "c.csv"), "--json", str(tmp_path / "c.json"),
               "--plot", str(tmp_path / "c.png")) == 0
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["complete"] is True and c["rows"] == 120
    assert len(read_table(tmp_path / "c.csv")["cell"]) == 120
    # never overwrites: a clean error naming its class, exit status 2 (a refused input)
    assert run("characterise", *common, "--device", CARD, "--levels", "3", "--cells-per-level", "20",
               "--out", str(tmp_path / "c.csv")) == 2
    err = capsys.readouterr().err
    assert "never overwrites" in err and "PathExistsError" in err


def test_a_failed_instrument_run_is_one_line_and_status_1(server, tmp_path, capsys):
    """The instrument, not the input, failed (analogmem._cli_output: status 1), named by class."""
    # geometry mismatch (bench default 32x32 against a 16x16 emulator)
    assert run("read", "--resource", server.resource, "--out", str(tmp_path / "r.csv")) == 1
    err = capsys.readouterr().err
    assert "16x16" in err and err.count("\n") == 1 and err.startswith("analogmem bench read: error: Instrument"), err
    # nothing listening
    assert run("read", "--resource", "TCPIP0::127.0.0.1::1::SOCKET", "--timeout-s", "0.3", "--retries", "0",
               "--out", str(tmp_path / "r.csv")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("analogmem bench read: error: InstrumentConnectionError: "), err


def test_serve_subprocess_stops_by_itself(tmp_path):
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, "-m", "analogmem.instrument.cli", "serve", "--device", CARD,
                             "--rows", "4", "--cols", "4", "--max-seconds", "20", "--port-file", str(port_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.monotonic()
        while not port_file.exists() and time.monotonic() - t0 < 15:
            time.sleep(0.05)
        port = int(port_file.read_text())
        with InstrumentBench(f"TCPIP0::127.0.0.1::{port}::SOCKET", device=CARD, config=BenchConfig(rows=4, cols=4),
                             timeout_s=2.0) as bench:
            bench.program(np.full(16, 10e-6))
            assert np.median(bench.read()) == pytest.approx(10e-6, rel=0.2)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"TCPIP0::127.0.0.1::{port}::SOCKET" in out


def test_serve_reset_on_connect_gives_each_connection_a_reset_instrument(tmp_path):
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, "-m", "analogmem.instrument.cli", "serve", "--device", CARD,
                             "--rows", "2", "--cols", "2", "--max-seconds", "20", "--port-file", str(port_file),
                             "--reset-on-connect"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def ask(sock, line: bytes) -> str:
        sock.sendall(line)
        reply = b""
        while not reply.endswith(b"\n"):
            reply += sock.recv(4096)
        return reply.decode().strip()

    try:
        t0 = time.monotonic()
        while not port_file.exists() and time.monotonic() - t0 < 15:
            time.sleep(0.05)
        port = int(port_file.read_text())
        with socket.create_connection(("127.0.0.1", port), timeout=5) as a:
            assert ask(a, b":SOUR:VOLT 100;:OUTP ON;:OUTP?\n") == "1"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as b:
            assert ask(b, b":SOUR:VOLT?;:OUTP?\n") == "0.000000000E+00;0"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_import_analogmem_and_cli_wiring_need_no_pyvisa():
    code = ("import sys, argparse, analogmem\n"
            "from analogmem.instrument.cli import add_subparser\n"
            "p = argparse.ArgumentParser(); add_subparser(p.add_subparsers())\n"
            "import analogmem.instrument\n"
            "assert not any(m.split('.')[0] in ('pyvisa', 'pymeasure') for m in sys.modules), 'pyvisa imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
