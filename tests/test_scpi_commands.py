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


def test_sim_file_commands_are_table_rows_of_their_kind():
    dev = _sim()["devices"]
    for name, spec in dev.items():
        messages = [d["q"] for d in spec.get("dialogues", [])] + [e["q"] for e in spec["error"]["error_queue"]]
        for message in messages:
            for header in _headers(message):
                row = lookup(header)
                assert row is not None, f"{name}: {header!r} is not in the command table"
                assert row.kind == ("query" if header.endswith("?") else "set")
                assert not row.emulator_only


def test_sim_file_properties_are_the_tables_settings():
    props = _sim()["devices"]["keithley2450"]["properties"]
    for name, p in props.items():
        setter, query = command(name, "set"), command(name, "query")
        assert p["getter"]["q"] == query.header
        assert p["setter"]["q"] == f"{setter.header} {{}}"
        assert (p["specs"]["min"], p["specs"]["max"]) == (setter.lo, setter.hi), name
        assert p["specs"]["type"] == "float" and setter.value == "number"
