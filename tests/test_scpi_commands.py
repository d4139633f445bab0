"""The 2450 SCPI command table is the one home of the command surface: the emulator
dispatches from it, the driver's strings come from it, and the pyvisa-sim file
(tests/fixtures/keithley2450.yaml) agrees with it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from analogmem.instrument import ScpiEmulatorServer
from analogmem.instrument.scpi_commands import COMMANDS, command, lookup, normalise
from analogmem.instrument.scpi_server import _Instrument, _ScpiError

yaml = pytest.importorskip("yaml")

SIM_FILE = Path(__file__).resolve().parent / "fixtures" / "keithley2450.yaml"


def _sim() -> dict:
    return yaml.safe_load(SIM_FILE.read_text())


def _headers(message: str) -> list[str]:
    return [part.strip().partition(" ")[0] for part in message.split(";") if part.strip()]


def test_header_forms_match_one_row():
    assert normalise(":SOURce:VOLTage:LEVel:IMMediate:AMPLitude") == "SOUR:VOLT"
    assert lookup(":sour:volt:lev") is command("source_voltage")
    assert lookup(":SYST:ERR:NEXT?") is command("next_error", "query")
    assert lookup(":MEASure:CURRent?") is lookup(":READ?") is command("current", "query")
    assert lookup(":SOUR:VOLT:RANG?") is None and lookup(":NOT:A:COMMAND") is None


def test_every_row_has_one_emulator_handler_and_every_handler_a_row():
    handlers = {n for n, _ in inspect.getmembers(_Instrument, inspect.isfunction)
                if n.startswith(("_set_", "_query_"))}
    wanted = {f"_{c.kind}_{c.name}" for c in COMMANDS if c.value != "ignored"}
    assert handlers == wanted


@pytest.fixture(scope="module")
def instrument():
    return ScpiEmulatorServer("pcm-nandakumar2019", rows=2, cols=2, seed=0).instrument


@pytest.mark.parametrize("row", COMMANDS, ids=lambda c: c.header)
def test_the_emulator_knows_every_row(instrument, row):
    # Whatever a row's command does without a proper parameter, it is never "undefined header".
    try:
        instrument.execute(row.header)
    except _ScpiError as exc:
        assert exc.code != -113, exc.message
    finally:
        instrument.reset()


NUMBER_SETTINGS = [c for c in COMMANDS if c.kind == "set" and c.value == "number"]


@pytest.mark.parametrize("row", NUMBER_SETTINGS, ids=lambda c: c.header)
def test_the_emulator_refuses_numbers_outside_the_rows_range(instrument, row):
    instrument.reset()
    for v in (row.lo, row.hi):
        assert instrument.execute(f"{row.header} {v!r}") is None
    with pytest.raises(_ScpiError) as exc:
        instrument.execute(f"{row.header} {row.hi * 1.5 + 1!r}")
    assert exc.value.code == -222
    instrument.reset()


def disagreements(sim: dict) -> list[str]:
    """Where a pyvisa-sim definition disagrees with the command table."""
    out = []
    for name, spec in sim["devices"].items():
        messages = [d["q"] for d in spec.get("dialogues", [])] + [e["q"] for e in spec["error"]["error_queue"]]
        for message in messages:
            for header in _headers(message):
                row = lookup(header)
                if row is None or row.emulator_only:
                    out.append(f"{name}: {header!r} is not a command of the 2450 in the table")
                elif row.kind != ("query" if header.endswith("?") else "set"):
                    out.append(f"{name}: {header!r} is a {row.kind} in the table")
        for prop, p in spec.get("properties", {}).items():
            try:
                setter, query = command(prop, "set"), command(prop, "query")
            except KeyError:
                out.append(f"{name}: property {prop!r} is no setting in the table")
                continue
            if p["getter"]["q"] != query.header or p["setter"]["q"] != f"{setter.header} {{}}":
                out.append(f"{name}: {prop} commands {p['getter']['q']!r}/{p['setter']['q']!r} are not the table's")
            if (p["specs"]["min"], p["specs"]["max"]) != (setter.lo, setter.hi) or setter.value != "number":
                out.append(f"{name}: {prop} range {p['specs']['min']}..{p['specs']['max']} is not the table's "
                           f"{setter.lo}..{setter.hi}")
    return out


def test_the_sim_file_agrees_with_the_table():
    assert disagreements(_sim()) == []


@pytest.mark.parametrize("edit", ["range", "header", "unknown", "property"])
def test_a_sim_file_that_drifts_from_the_table_is_caught(edit):
    sim = _sim()
    dev = sim["devices"]["keithley2450"]
    if edit == "range":
        dev["properties"]["compliance_current"]["specs"]["max"] = 2.0
    elif edit == "header":
        dev["properties"]["source_voltage"]["setter"]["q"] = ":SOUR:VOLT:AMPL:X {}"
    elif edit == "unknown":
        dev["dialogues"].append({"q": ":SOUR:VOLT:RANG?", "r": "20"})
    else:
        dev["properties"]["nplc"] = dev["properties"]["source_voltage"]
    assert len(disagreements(sim)) == 1
