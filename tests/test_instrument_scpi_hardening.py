"""The SCPI emulator and `analogmem bench` under hostile input (issue 25, items 10, 11, 16,
19, 20, 22, 23, 28, 29, ``range(None)`` and ``--enforce-limits``): each refusal names what
was wrong, and the instrument state is unchanged after it."""

from __future__ import annotations

import argparse
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("pyvisa_py")

from analogmem import WriteVerify  # noqa: E402
from analogmem.errors import AddressError, SettingError  # noqa: E402
from analogmem.instrument import BenchConfig, InstrumentBench, SafetyLimits, ScpiEmulatorServer  # noqa: E402
from analogmem.instrument.cli import _parse_cells, add_subparser  # noqa: E402
from analogmem.instrument.scpi_server import MAX_MESSAGE_BYTES, parse_nrf  # noqa: E402

CARD = "pcm-nandakumar2019"


class Client:
    def __init__(self, port: int, timeout_s: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ask(self, msg: str) -> str:
        self.sock.sendall(msg.encode() + b"\n")
        return self.file.readline().decode().strip()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def server():
    with ScpiEmulatorServer(CARD, rows=4, cols=4, seed=0, max_connections=8) as srv:
        yield srv


def test_message_straddling_64KiB_is_refused_whole(server):
    c = Client(server.port)
    assert c.ask(":SOUR:VOLT:LEV 0.1;:SOUR:VOLT?") == "1.000000000E-01"
    tail = ":SOUR:VOLT:LEV 1.55"
    head = ":SOUR:VOLT:LEV 0.5;"
    pad = MAX_MESSAGE_BYTES - len(head) - 16  # "1.55" straddles byte 65536
    msg = head + "*WAI;" * (pad // 5) + ";" * (pad % 5) + tail
    assert len(msg) < MAX_MESSAGE_BYTES + len(tail) and len(msg) + 1 > MAX_MESSAGE_BYTES
    i = msg.index("1.55")
    assert i < MAX_MESSAGE_BYTES <= i + 4
    c.send(msg.encode() + b"\n")
    # Nothing of it ran (neither 0.5 V nor 1.0 V), one -363, no reply line for it.
    assert c.ask(":SOUR:VOLT?;:SYST:ERR?").startswith("1.000000000E-01;-363,")
    assert c.ask(":SYST:ERR?") == '0,"No error"'
    # The longest message that fits is executed.
    ok = ":SOUR:VOLT:LEV 0.2;" + "*WAI;" * ((MAX_MESSAGE_BYTES - 60) // 5)
    ok += ";" * (MAX_MESSAGE_BYTES - 1 - len(ok) - len(":SOUR:VOLT?")) + ":SOUR:VOLT?"
    assert len(ok) + 1 == MAX_MESSAGE_BYTES
    assert c.ask(ok) == "2.000000000E-01"
    c.close()


def test_9MB_line_of_queries_gets_no_reply_and_one_error(server):
    c = Client(server.port, timeout_s=20.0)
    c.send(b"*OPC?;" * (9_000_000 // 6) + b"\n")
    assert c.ask("*IDN?").startswith("analogmem,")  # the next line is the answer to *IDN?
    assert c.ask(":SYST:ERR?").startswith("-363,")
    assert c.ask(":SYST:ERR:COUN?") == "0"
    c.close()


@pytest.mark.parametrize("text", ["1_5", "0x10", "inf", "nan", "1.5.5", "1e", "--1", "1,5", "", "+-1"])
def test_nrf_grammar_refuses(server, text):
    assert parse_nrf(text) is None
    c = Client(server.port)
    c.ask(":SOUR:VOLT:LEV 0.3;*CLS;*OPC?")
    reply = c.ask(f":SOUR:VOLT:LEV {text};:SOUR:VOLT?;:SYST:ERR?")
    assert reply.startswith("3.000000000E-01;-10"), reply  # -104 data type / -109 missing
    c.close()


@pytest.mark.parametrize("text,value", [("1.5", 1.5), ("+.5", 0.5), ("-2.", -2.0), ("1E-3", 1e-3), (" 7 ", 7.0)])
def test_nrf_grammar_accepts(text, value):
    assert parse_nrf(text) == value


def test_fault_with_zero_delay_is_an_error_not_a_crash(server):
    c = Client(server.port)
    assert c.ask(":EMUL:FAUL DEL,1,0;:SYST:ERR?").startswith("-222,")
    assert c.ask("*IDN?").startswith("analogmem,")
    assert c.ask(":EMUL:FAUL FOO,1;:SYST:ERR?").startswith("-224,")
    c.close()


def test_faults_are_per_client(server):
    a, b = Client(server.port), Client(server.port)
    a.ask(":EMUL:FAUL DISC,1000;*OPC?")  # its own reply is not faulted: armed after the query was taken
    for _ in range(50):
        assert b.ask("*OPC?") == "1"  # the other client is untouched
    a.send(b"*OPC?\n")
    assert a.file.readline() == b""  # a's own next reply: disconnected
    a.close()
    assert b.ask(":SYST:ERR?") == '0,"No error"'
    b.close()


def test_connections_are_bounded_and_server_stays_up(server):
    before = threading.active_count()
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=5.0) for _ in range(40)]
    time.sleep(0.3)
    assert threading.active_count() - before <= 8 + 1
    assert server.stats()["refused_connections"] >= 40 - 8
    for s in socks:
        s.close()
    time.sleep(0.3)
    c = Client(server.port)
    assert c.ask("*IDN?").startswith("analogmem,")
    c.close()


def test_rapid_connects_do_not_stall(server):
    stalls = 0
    for _ in range(300):
        t = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5.0)
        stalls += time.perf_counter() - t > 0.5
        s.close()
    # With backlog 5, 47 of 300 connects here stalled for a SYN retry (~1.02 s; 16 % in the
    # audit). A plain listen(128) socket server shows 2/300 on this kernel (TIME_WAIT reuse
    # on loopback, not the server): allow up to 3 %.
    assert stalls <= 9, stalls


def test_enforce_limits_refuses_past_the_bench_file():
    lim = SafetyLimits(max_set_V=1.7, max_reset_V=2.0, compliance_A=1e-4, allowed_cells=((0, 8),))
    with ScpiEmulatorServer(CARD, rows=4, cols=4, seed=0, limits=lim) as srv:
        c = Client(srv.port)
        assert c.ask(":SOUR:VOLT:LEV 1.8;:SOUR:VOLT?;:SYST:ERR?").startswith("0.000000000E+00;-222,")
        assert "max_set_V" in c.ask(":SOUR:VOLT:LEV 1.8;:SYST:ERR?")
        assert c.ask(":SOUR:VOLT:LEV -2.5;:SYST:ERR?").startswith("-222,")
        assert c.ask(":SOUR:VOLT:ILIM 1e-3;:SOUR:VOLT:ILIM?;:SYST:ERR?").startswith("1.050000000E-04;-222,")
        assert c.ask(":ROUT:CLOS (@1!3!1);:ROUT:CLOS?;:SYST:ERR?").startswith("(@);-222,")  # cell 8
        assert c.ask(":SOUR:VOLT:LEV 1.6;:SYST:ERR?") == '0,"No error"'
        c.close()
    with ScpiEmulatorServer(CARD, rows=4, cols=4, seed=0) as srv:  # a real 2450 accepts ±210 V
        c = Client(srv.port)
        assert c.ask(":SOUR:VOLT:LEV 100;:SYST:ERR?") == '0,"No error"'
        c.close()


def test_voltage_input_card_is_pulsed_with_its_voltage():
    with ScpiEmulatorServer("pcm-stanford", rows=2, cols=2, seed=0) as srv:
        c = Client(srv.port)
        lo, hi = srv.instrument.device.input_range
        assert c.ask(":ROUT:CLOS (@1!1!1);:SOUR:VOLT:LEV 1.6;:OUTP ON;:READ?;:OUTP OFF;:SYST:ERR?").endswith(
            '0,"No error"')
        assert srv.stats()["pulses"] == 1
        i = float(c.ask(":SOUR:VOLT:LEV 0.2;:OUTP ON;:READ?;:OUTP OFF"))
        assert 0 < i / 0.2 and np.isfinite(i)
        c.close()


def test_card_verify_with_no_budget_programs(server):
    """``WriteVerify.card()`` leaves max_pulses None: the bench takes a budget, not range(None)."""
    with InstrumentBench(server.resource, device=CARD, config=BenchConfig(rows=4, cols=4)) as bench:
        g = bench.scheme.g_min_S + 0.5 * (bench.scheme.g_max_S - bench.scheme.g_min_S)
        rep = bench.program(np.full(4, g), addresses=np.arange(4),
                            verify=WriteVerify.card(windows=[(0.8 * g, 1.2 * g)]))
        assert rep.success.all() and (rep.pulses >= 1).all()
        with pytest.raises(SettingError, match="window"):
            bench.program(np.full(2, g), addresses=np.arange(2), verify=WriteVerify.card())


def test_cells_range_checked_before_building_lists():
    t = time.perf_counter()
    with pytest.raises(AddressError, match="outside"):
        _parse_cells("0-10000000", 1024)
    with pytest.raises(AddressError, match="backwards"):
        _parse_cells("5-3", 1024)
    with pytest.raises(AddressError, match="not an address"):
        _parse_cells("a-b", 1024)
    assert time.perf_counter() - t < 0.1
    assert _parse_cells("0-3,7", 16).tolist() == [0, 1, 2, 3, 7]


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", *argv])
    return int(args.func(args) or 0)


@pytest.mark.parametrize("argv,needle", [
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--host", "example.org"], "loopback"),
    (["serve", "--host", "10.0.0.1"], "loopback"),
    (["serve", "--rows", "-1"], "--rows"),
    (["serve", "--cols", "0"], "--cols"),
    (["serve", "--max-seconds", "nan"], "--max-seconds"),
    (["serve", "--max-seconds", "-1"], "--max-seconds"),
    (["serve", "--bench-config", "/nonexistent/bench.toml"], "bench config"),
    (["serve", "--bench-config", "/dev/zero"], "not a regular file"),
    (["read", "--resource", "TCPIP0::127.0.0.1::1::SOCKET", "--timeout-s", "nan", "--out", "x.csv"], "--timeout-s"),
])
def test_cli_refusals_are_one_line_exit_2(argv, needle, capsys, tmp_path):
    assert _run(*argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], err


def test_cli_bad_toml_and_cells_out_of_range(server, tmp_path, capsys):
    bad = tmp_path / "bench.toml"
    bad.write_text("[matrix\nrows = 4\n")
    assert _run("serve", "--bench-config", str(bad)) == 2
    assert "TOML" in capsys.readouterr().err
    bad.write_text("[matrix]\nrows = 'four'\n")
    assert _run("serve", "--bench-config", str(bad)) == 2
    assert "[matrix].rows: expected an integer, got 'four'" in capsys.readouterr().err
    common = ["--resource", server.resource, "--rows", "4", "--cols", "4", "--no-progress"]
    for cells in ("0-10000000", "5-3"):
        assert _run("read", *common, "--cells", cells, "--out", str(tmp_path / "r.csv")) == 2
        assert "--cells" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


def test_cli_ctrl_c_is_one_line_exit_130(monkeypatch, capsys, tmp_path):
    import analogmem.instrument.cli as cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_open_bench", interrupted)
    assert _run("read", "--resource", "TCPIP0::127.0.0.1::1::SOCKET", "--out", str(tmp_path / "r.csv")) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0]


def test_serve_localhost_is_loopback():
    with ScpiEmulatorServer(CARD, rows=2, cols=2, host="localhost") as srv:
        assert srv.host == "127.0.0.1"
    with pytest.raises(SettingError):
        ScpiEmulatorServer(CARD, rows=-1, cols=2)
