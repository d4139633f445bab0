"""Bad input tried as a hostile user would (issue 18): one test per hole and per item of
the "Also" list. Each asserts the specific AnalogMemError subclass, its message, and that
the bench / store / card / file on disk is unchanged."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analogmem
from analogmem import EmulatedBench, EmulatedStore, store_model
from analogmem.calibrate import WriteChannelCalibrator, PolynomialCalibrator
from analogmem.cli import main
from analogmem.errors import (
    BenchSizeError,
    CalibrationError,
    DeviceCardError,
    ReadTimeError,
    StorageError,
    TargetRangeError,
)


def _bench_state(bench):
    return bench.cell_state(), bench.time_s, bench.seed_sequence.n_children_spawned


def _assert_unchanged(before, bench):
    state, t, spawned = _bench_state(bench)
    assert t == before[1] and spawned == before[2]
    for k, v in before[0].items():
        np.testing.assert_array_equal(state[k], v, err_msg=k)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------- 1. bundled name vs local file
def test_a_local_file_never_replaces_a_bundled_card(tmp_path, monkeypatch, card_text):
    monkeypatch.chdir(tmp_path)
    impostor = tmp_path / "rram-wan2022"
    impostor.write_text(card_text("pcm-nandakumar2019").replace("g_max_S = 2.5e-05", "g_max_S = 5e-06"))
    before = _sha(impostor)
    dev = analogmem.load_device("rram-wan2022")
    assert dev.name == "rram-wan2022" and dev.g_max_S == pytest.approx(40e-6)  # the bundled card
    assert analogmem.load_device("./rram-wan2022").name == "pcm-nandakumar2019"  # a path is a path
    impostor.unlink()
    (tmp_path / "rram-wan2022").mkdir()  # a folder of that name: still the bundled card
    assert analogmem.load_device("rram-wan2022").g_max_S == pytest.approx(40e-6)
    assert before  # the file was only read


def test_an_ambiguous_bare_name_is_refused_saying_how_to_load_each(tmp_path, monkeypatch, card_text):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-card").write_text(card_text())
    with pytest.raises(DeviceCardError, match=r"'my-card' is not a bundled card name.*'\./my-card'.*bundled cards: "):
        analogmem.load_device("my-card")
    assert analogmem.load_device("./my-card").name == "pcm-nandakumar2019"
    with pytest.raises(DeviceCardError, match=r"rram-wan2022\.toml: cannot read.*pass the name 'rram-wan2022'"):
        analogmem.load_device("rram-wan2022.toml")  # looks like a path; no such file here
    with pytest.raises(DeviceCardError, match="no bundled device card named 'nope'"):
        analogmem.load_device("nope")
    with pytest.raises(DeviceCardError, match="bundled card name, a path"):
        analogmem.load_device(42)


def test_a_card_that_is_not_utf8_is_a_card_error(tmp_path, card_text):
    p = tmp_path / "latin1.toml"
    p.write_bytes(card_text().encode() + b'\n# caf\xe9\n')
    before = _sha(p)
    with pytest.raises(DeviceCardError, match=r"latin1\.toml: not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        analogmem.load_device(p)
    assert _sha(p) == before


# ----------------------------------------------------------------- 2. store_model is all or nothing
def _mlp():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))  # 30 weights


def test_a_model_too_large_for_the_store_programs_nothing(tmp_path):
    from analogmem.storage.encoders import make_encoder

    store = EmulatedStore("rram-wan2022", 40, seed=0)
    before = _bench_state(store.bench)
    enc = make_encoder("differential", 2)  # 2 cells per weight: 60 cells for 30 weights
    with pytest.raises(StorageError, match=r"the model needs 60 cells \(4 tensors.*only 40 of 40 are free; "
                                           r"nothing was programmed"):
        store_model(_mlp(), store, encoder=enc)
    assert store.names() == [] and store.cells_used == 0
    _assert_unchanged(before, store.bench)
    # nothing was taken: the names are still free, and a model that fits goes on
    import torch

    small = torch.nn.Sequential(torch.nn.Linear(4, 2))  # 10 weights: 20 cells
    store_model(small, store, encoder=enc)
    assert store.names() == ["0.weight", "0.bias"] and store.cells_used == 20


def test_a_tensor_failing_part_way_takes_back_every_tensor_of_the_call(monkeypatch):
    from analogmem.errors import InstrumentError
    from analogmem.storage.encoders import make_encoder

    store = EmulatedStore("rram-wan2022", 100, seed=0)
    calls = {"n": 0}
    real = store.bench.program

    def flaky(*args, **kwargs):  # an instrument that fails on the third tensor
        calls["n"] += 1
        if calls["n"] == 3:
            raise InstrumentError("link lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(store.bench, "program", flaky)
    with pytest.raises(InstrumentError, match="link lost") as info:
        store_model(_mlp(), store, encoder=make_encoder("differential", 2))
    assert "removed from the store again" in "".join(getattr(info.value, "__notes__", []))
    assert store.names() == [] and store.cells_used == 0
    monkeypatch.setattr(store.bench, "program", real)
    store_model(_mlp(), store, encoder=make_encoder("differential", 2))  # the same names go on now
    assert store.cells_used == 60


def test_store_model_refuses_taken_names_before_programming():
    from analogmem.storage.encoders import make_encoder

    store = EmulatedStore("rram-wan2022", 200, seed=0)
    store.put("2.bias", np.ones(2), encoder=make_encoder("differential", 2))
    used = store.cells_used
    with pytest.raises(StorageError, match=r"\['2.bias'\] are already on this store.*nothing was programmed"):
        store_model(_mlp(), store, encoder=make_encoder("differential", 2))
    assert store.names() == ["2.bias"] and store.cells_used == used


# ----------------------------------------------------------------- 3. SCPI server
def _client(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=3.0)
    f = s.makefile("rb")

    def ask(msg: bytes) -> str:
        s.sendall(msg)
        return f.readline().decode("ascii").strip()

    return s, ask


def test_a_non_ascii_byte_is_an_scpi_error_not_a_dropped_connection():
    from analogmem.instrument import ScpiEmulatorServer

    with ScpiEmulatorServer("pcm-nandakumar2019", rows=2, cols=2, seed=0) as srv:
        before = _bench_state(srv.bench)
        a, ask_a = _client(srv.port)
        b, ask_b = _client(srv.port)
        try:
            assert ask_a(b"\xe9\n:SYST:ERR?\n") == '-101,"Invalid character; byte 0xE9 at column 0, message not executed"'
            assert ask_a(b"*IDN?\n").startswith("analogmem")  # the connection is still up
            assert ask_a(b'\xff:SOUR:VOLT 1\n*OPC?\n') == "1"  # the first line is not executed (no reply)
            assert ask_b(b":SYST:ERR?\n").startswith('-101,"Invalid character; byte 0xFF')  # shared queue, ASCII
            assert ask_b(b":SOUR:VOLT?\n") == "0.000000000E+00"
        finally:
            a.close()
            b.close()
        for k, v in before[0].items():  # no cell was touched (the server's clock runs with the wall clock)
            np.testing.assert_array_equal(srv.bench.cell_state()[k], v, err_msg=k)


def test_instrument_state_persists_across_connections_until_rst_or_reset_on_connect():
    from analogmem.instrument import ScpiEmulatorServer

    with ScpiEmulatorServer("pcm-nandakumar2019", rows=2, cols=2, seed=0) as srv:
        a, ask = _client(srv.port)
        assert ask(b":SOUR:VOLT 100;:OUTP ON;:SOUR:VOLT?;:OUTP?\n") == "1.000000000E+02;1"
        a.close()
        b, ask = _client(srv.port)  # like a real instrument, the next client finds it so (documented)
        assert ask(b":SOUR:VOLT?;:OUTP?\n") == "1.000000000E+02;1"
        cells = srv.bench.cell_state()
        assert ask(b"*RST;:SOUR:VOLT?;:OUTP?;:ROUT:CLOS?\n") == "0.000000000E+00;0;(@)"
        for k, v in cells.items():  # *RST clears the instrument, not the cells
            np.testing.assert_array_equal(srv.bench.cell_state()[k], v)
        b.close()
    with ScpiEmulatorServer("pcm-nandakumar2019", rows=2, cols=2, seed=0, reset_on_connect=True) as srv:
        a, ask = _client(srv.port)
        ask(b":SOUR:VOLT 100;:OUTP ON;:OUTP?\n")
        a.close()
        b, ask = _client(srv.port)
        assert ask(b":SOUR:VOLT?;:OUTP?\n") == "0.000000000E+00;0"
        b.close()


# ----------------------------------------------------------------- 4. absurd reads in a calibration table
def _reads_table(absurd_row: int | None = None, value: float = 1e300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    levels = np.repeat([5e-6, 10e-6, 15e-6, 20e-6], 60)  # 240 reads
    reads = levels * np.exp(rng.normal(0, 0.05, levels.size))
    if absurd_row is not None:
        reads[absurd_row] = value
    return pd.DataFrame({"target_S": levels, "read_value_S": reads})


def test_one_absurd_read_is_refused_and_no_card_is_written(tmp_path):
    csv, out = tmp_path / "reads.csv", tmp_path / "card.toml"
    _reads_table(17).to_csv(csv, index=False)
    out.write_text("# an older card\n")
    before = _sha(out)
    with pytest.raises(CalibrationError, match=r"1 read\(s\) are implausible or far outliers: row 17: read_value_S = "
                                               r"1e\+300 at target_S = 5e-06 is outside the plausible range.*"
                                               r"--drop-outliers"):
        WriteChannelCalibrator().fit(csv)
    with pytest.raises(CalibrationError, match="row 17"):
        PolynomialCalibrator(degree=1).fit(csv)
    assert main(["calibrate", str(csv), "--out", str(out)]) == 2
    assert _sha(out) == before  # the card on disk is unchanged


def test_drop_outliers_excludes_and_lists_them(tmp_path):
    import json

    csv, out, js = tmp_path / "reads.csv", tmp_path / "card.toml", tmp_path / "fit.json"
    table = _reads_table(17)
    ohms = 1 / table["read_value_S"]
    ohms.iloc[100] = 1000 * ohms.iloc[101]  # one read logged in kΩ among Ω: a robust-rule outlier
    pd.DataFrame({"target_S": table["target_S"], "read_value_ohm": ohms}).to_csv(csv, index=False)
    with pytest.raises(CalibrationError, match=r"2 read\(s\).*row 17.*row 100: read_value_ohm = .*interquartile"):
        WriteChannelCalibrator().fit(csv)
    assert main(["calibrate", str(csv), "--out", str(out), "--drop-outliers", "--json", str(js)]) == 0
    dev = analogmem.load_device(out)
    dropped = dev.fit_report["dropped_reads"]
    assert [d["row"] for d in dropped] == [17, 100] and "plausible range" in dropped[0]["reason"]
    assert [d["row"] for d in json.loads(js.read_text())["dropped_reads"]] == [17, 100]
    g = EmulatedBench(dev, 4000, seed=0)
    g.program(np.repeat(np.asarray(dev.programming.inputs), 1000))
    assert g.read().max() < 1e-4  # benches from the card read like the good reads


def test_genuine_heavy_tails_are_not_outliers():
    """Student-t (3 dof) reads in ln g: heavy tails, no gross errors — nothing is flagged."""
    rng = np.random.default_rng(1)
    levels = np.repeat([5e-6, 10e-6, 15e-6], 400)
    table = pd.DataFrame({"target_S": levels, "read_value_S": levels * np.exp(0.05 * rng.standard_t(3, levels.size))})
    cal = WriteChannelCalibrator().fit(table)
    assert cal.dropped_ == []


# ----------------------------------------------------------------- 5. targets and times that are not real numbers
@pytest.fixture
def bench():
    b = EmulatedBench("pcm-nandakumar2019", 4, seed=0)
    b.wait(10.0)
    b.program(np.full(4, 10e-6))  # programmed at 10 s
    b.wait(50.0)  # the clock is at 60 s
    return b


@pytest.mark.parametrize("targets, message", [
    (np.full(4, 1e-5 + 1e-6j), "real numbers .*dtype complex128"),
    (["1e-6"] * 4, "real numbers .*dtype <U4"),
    ([True, False, True, True], "real numbers .*dtype bool"),
    (np.array([1e-5] * 4, dtype=object), "real numbers .*dtype object"),
    ("1e-6", "got a str"),
])
def test_targets_must_be_real_numbers(bench, targets, message):
    before = _bench_state(bench)
    with pytest.raises(TargetRangeError, match=message):
        bench.program(targets)
    _assert_unchanged(before, bench)


@pytest.mark.parametrize("call, message", [
    (lambda b: b.read(t_s="60"), r"t_s must be a real number of seconds, got '60' \(str\)"),
    (lambda b: b.read(t_s=True), r"t_s must be a real number of seconds, got True \(bool\)"),
    (lambda b: b.read(t_s=1e300), r"t_s must be finite, >= 0 s and <= 1e\+15 s, got 1e\+300"),
    (lambda b: b.read(t_s=1e15), r"read\(t_s=1e\+15\) would move the bench clock to 1e\+15 s, past the maximum"),
    (lambda b: b.wait(1e300), "seconds must be finite, >= 0 s and <= 1e"),
    (lambda b: b.wait(np.array([1.0])), "seconds must be a real number"),
    (lambda b: b.wait(1e15), r"wait\(1e\+15\) would move the bench clock .* past the maximum 1e\+15 s"),
])
def test_times_must_be_real_bounded_numbers(bench, call, message):
    before = _bench_state(bench)
    with pytest.raises(TargetRangeError, match=message):
        call(bench)
    _assert_unchanged(before, bench)


def test_a_bake_past_the_maximum_time_leaves_the_clock(bench):
    dev = analogmem.load_device("rram-radar")
    b = EmulatedBench(dev, 4, seed=0)
    before = _bench_state(b)
    with pytest.raises(TargetRangeError, match=r"bake\(.*past the maximum"):
        b.bake(1e7, 500.0)  # 4 months at 227 °C: ~1e26 s at 300 K
    with pytest.raises(TargetRangeError, match="temperature_K must be a real number"):
        b.bake(10.0, "300")
    _assert_unchanged(before, b)


# ----------------------------------------------------------------- "Also" list
@pytest.mark.parametrize("n_cells, message", [
    (0, r"n_cells must be a positive integer, got 0 \(int\)"),
    (-5, r"n_cells must be a positive integer, got -5"),
    ("16", r"n_cells must be a positive integer, got '16' \(str\)"),
    (16.0, r"got 16.0 \(float\)"),
    (True, r"got True \(bool\)"),
    (10**13, r"n_cells = 10000000000000 needs .* GiB for the per-cell state .* available"),
])
def test_n_cells_is_checked_before_anything_is_allocated(n_cells, message):
    with pytest.raises(BenchSizeError, match=message):
        EmulatedBench("pcm-nandakumar2019", n_cells)
    with pytest.raises(BenchSizeError, match=message):
        EmulatedStore("pcm-nandakumar2019", n_cells)


def _store_with_a_tensor():
    from analogmem.storage.encoders import make_encoder

    store = EmulatedStore("rram-wan2022", 50, seed=0)
    store.put("w", np.linspace(-1, 1, 10), encoder=make_encoder("differential", 2))
    return store


def test_snapshot_save_errors_are_storage_errors_naming_the_path(tmp_path, monkeypatch):
    from analogmem.storage import save_snapshot

    store = _store_with_a_tensor()
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(StorageError, match=rf"cannot write snapshot '{folder}': Is a directory; nothing was written"):
        save_snapshot(store, folder)
    assert list(folder.iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["a-folder"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StorageError, match=rf"cannot write snapshot '{a_file}/chip': File exists \({a_file}\)"):
        save_snapshot(store, a_file / "chip")
    assert a_file.read_text() == "x"
    # PermissionError: the tests run as root here, where chmod does not deny; the OS error is injected
    import analogmem._io as io

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(io.tempfile, "mkstemp", denied)
    with pytest.raises(StorageError, match=r"cannot write snapshot '.*chip': Permission denied"):
        save_snapshot(store, tmp_path / "chip")
    assert not (tmp_path / "chip").exists()


def test_a_killed_save_leaves_a_temp_file_that_the_next_save_removes(tmp_path):
    from analogmem.storage import load_snapshot, save_snapshot

    path = tmp_path / "chip.safetensors"
    killer = (
        "import os, sys\n"
        "from analogmem import _io\n"
        "os.replace = lambda *a, **k: os.kill(os.getpid(), 9)  # killed between writing and renaming\n"
        f"_io.atomic_write_bytes({str(path)!r}, b'x' * 1_000_000)\n")
    proc = subprocess.run([sys.executable, "-c", killer], capture_output=True, timeout=60)
    assert proc.returncode == -9
    stale = list(tmp_path.glob(".chip.safetensors.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size == 1_000_000 and not path.exists()
    live = tmp_path / f".chip.safetensors.{os.getpid()}.abcd1234.tmp"  # a writer still alive: kept
    live.write_bytes(b"in progress")
    save_snapshot(_store_with_a_tensor(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, live.name])
    assert load_snapshot(path).names() == ["w"]


def test_reading_before_the_clock_is_refused_like_on_the_instrument(bench):
    from analogmem.instrument import InstrumentReadTimeError

    before = _bench_state(bench)
    with pytest.raises(ReadTimeError, match=r"read at t_s = 1 s after programming was asked 49 s too late .* "
                                            "cannot read in the past"):
        bench.read(t_s=1.0)
    _assert_unchanged(before, bench)
    assert issubclass(InstrumentReadTimeError, ReadTimeError)  # the instrument raises the same family
    assert bench.read(t_s=50.0).shape == (4,)  # exactly now is fine


@pytest.mark.parametrize("make", [
    lambda: EmulatedBench("pcm-nandakumar2019", 10, seed=0, backend="fortran"),
    lambda: EmulatedBench("pcm-nandakumar2019", 10, seed=0, n_threads=0),
    lambda: EmulatedBench("pcm-nandakumar2019", 10, seed=0, n_threads="2"),
    lambda: EmulatedBench("pcm-nandakumar2019", 10, seed=0, dtype="float16"),
    lambda: analogmem.WriteVerify(max_pulses=0),
    lambda: analogmem.WriteVerify(tolerance_S=float("nan")),
    lambda: EmulatedBench("pcm-nandakumar2019", 10, seed=0).read_chunks(1.0, chunk_cells=0).__next__(),
], ids=["backend", "n_threads=0", "n_threads-str", "dtype", "max_pulses", "tolerance-nan", "chunk_cells"])
def test_an_option_outside_its_domain_is_a_setting_error(make):
    """Bench options and write-verify settings: a SettingError (still a ValueError for
    generic callers) naming the option, raised before anything is made or changed."""
    with pytest.raises(analogmem.SettingError) as info:
        make()
    assert isinstance(info.value, ValueError)
    assert any(word in str(info.value) for word in ("backend", "n_threads", "dtype", "max_pulses", "tolerance",
                                                     "chunk_cells"))
