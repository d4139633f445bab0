"""The 2600B TSP emulator under hostile input (unknown functions, unbalanced quotes, a
10 MB line, runaway loops, 20 concurrent clients): every bad line is answered with an
error in the queue, the server stays up, and good lines keep their answers."""

from __future__ import annotations

import socket
import threading

import pytest

from analogmem.errors import SettingError
from analogmem.instrument import SafetyLimits, TspEmulatorServer

CARD = "pcm-nandakumar2019"


class Client:
    def __init__(self, port: int, timeout_s: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.file = self.sock.makefile("rb")

    def send(self, line: str | bytes) -> None:
        self.sock.sendall((line.encode() if isinstance(line, str) else line) + b"\n")

    def ask(self, line: str) -> str:
        self.send(line)
        return self.file.readline().decode().rstrip("\n")

    def errors(self) -> list[tuple[int, str]]:
        out = []
        while True:
            code, msg, *_ = self.ask("print(errorqueue.next())").split("\t")
            if float(code) == 0:
                return out
            out.append((int(float(code)), msg))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def srv():
    with TspEmulatorServer(CARD, rows=4, cols=4, seed=0, chunk_seconds=1.0) as s:
        yield s


def test_print_and_tables(srv):
    c = Client(srv.port)
    assert c.ask("print(1 + 1)") == "2.00000e+00"
    assert c.ask("format.asciiprecision = 12 print(1/3)") == "3.33333333333e-01"
    assert c.ask("x = {1, 2, 3} print(table.concat(x, ','), #x, type(x))") == "1,2,3\t3.00000000000e+00\ttable"
    assert c.ask("*IDN?") == srv.instrument.idn()
    assert c.ask("print(localnode.model)") == "2636B"
    c.close()


@pytest.mark.parametrize("line,code", [
    ("nosuchfunction()", -286),
    ("print(\"unbalanced", -285),
    ("print('also unbalanced)", -285),
    ("smua.source.nosuch = 1", -286),
    ("smua.source.levelv = 'high'", -222),
    ("smua.source.levelv = 1e9", -222),
    ("while true do end", -286),
    ("local function f() return f() end f()", -286),
    ("local s = 'x' for i = 1, 40 do s = s .. s end", -286),
    ("for i = 1, 1e12 do end", -286),
    ("x = = 1", -285),
    ("end", -285),
    ("channel.close('1!9!9')", -222),
    ("PulseVMeasureI(smua, 0, 1.5)", -286),
    ("print(1 + {})", -286),
    ("function", -285),
    ("x = " + "(" * 5000 + "1" + ")" * 5000, -285),
    ("x = " + "-" * 5000 + "1", -285),
    ("t = {} t.t = t x = (#t == 0 and t.t.t.t == t)", 0),
])
def test_hostile_lines_are_errors(srv, line, code):
    c = Client(srv.port)
    c.send(line)
    assert c.ask("print('alive')") == "alive"
    errs = c.errors()
    assert [e[0] for e in errs] == ([code] if code else []), errs
    c.close()


def test_syntax_error_runs_nothing_runtime_error_keeps_what_ran(srv):
    c = Client(srv.port)
    c.send("x = 1 y = (")
    assert c.ask("print(x)") == "nil"
    c.send("x = 2 nosuch() x = 3")
    assert c.ask("print(x)") == "2.00000e+00"
    assert [e[0] for e in c.errors()] == [-285, -286]
    c.close()


def test_10MB_line_is_refused_whole(srv):
    c = Client(srv.port, timeout_s=30.0)
    c.send("x = 5 " + "print(x) " * (10_000_000 // 9))
    assert c.ask("print(x)") == "nil"  # none of it ran
    assert [e[0] for e in c.errors()] == [-363]
    c.send(b"print('\xff')")
    assert [e[0] for e in c.errors()] == [-101]
    c.close()


def test_20_concurrent_clients(srv):
    wrong: list[str] = []

    # a line with an error and no output answers nothing: ask the next line's reply
    def work2(k: int) -> None:
        c = Client(srv.port)
        try:
            for j in range(100):
                if j % 10 == 0:
                    c.send("nosuch()")
                r = c.ask(f"print('{k}:{j}')")
                if r != f"{k}:{j}":
                    wrong.append(r)
        finally:
            c.close()

    threads = [threading.Thread(target=work2, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not wrong and not any(t.is_alive() for t in threads)
    assert srv.stats()["errors_queued"] == 32  # 200 errors; the queue keeps 32, the last one "overflow"
    c = Client(srv.port)
    assert c.ask("print('alive')") == "alive"
    c.close()


def test_loadscript(srv):
    c = Client(srv.port)
    for line in ["loadscript demo", "function twice(x)", "  return 2 * x", "end", "endscript"]:
        c.send(line)
    assert c.ask("print(type(demo))") == "table"
    assert c.ask("demo() print(twice(21))") == "4.20000e+01"
    for line in ["loadscript broken", "function f(", "endscript"]:
        c.send(line)
    assert [e[0] for e in c.errors()] == [-285]
    c.close()


def test_enforced_limits_refuse_on_the_instrument():
    lim = SafetyLimits(max_set_V=1.5, max_reset_V=2.0, compliance_A=1e-4)
    with TspEmulatorServer(CARD, rows=2, cols=2, seed=0, limits=lim) as s:
        c = Client(s.port)
        c.send("channel.close('1!1!1') smua.source.levelv = 1.7")
        c.send("smua.source.limiti = 1e-2")
        c.send("PulseVMeasureI(smua, 0, 1.9, 1e-3, 1e-3, 1)")
        c.send("PulseVMeasureI(smua, 0, 1.4, 1, 1e-3, 1)")  # 1 s width > max_pulse_width_s
        assert [e[0] for e in c.errors()] == [-222] * 4
        assert s.stats()["pulses"] == 0 and s.stats()["max_pulse_V"] == 0
        c.close()


def test_server_arguments_are_checked():
    with pytest.raises(SettingError, match="2600B"):
        TspEmulatorServer(CARD, model="2450")
    with pytest.raises(SettingError, match="port"):
        TspEmulatorServer(CARD, port=70000)
    with pytest.raises(SettingError, match="loopback"):
        TspEmulatorServer(CARD, host="0.0.0.0")
    with TspEmulatorServer(CARD, rows=1, cols=1, model="2601B") as s:
        c = Client(s.port)
        assert c.ask("print(type(smub))") == "nil" and c.ask("print(type(smua))") == "table"
        c.close()
