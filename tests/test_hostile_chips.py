"""Chip directories under a hostile user (issue 25): two processes on one chip, a kill
mid-program, flipped bits and truncations of every state file, edited and crafted headers,
foreign folders, full disks, failed header saves and poisoned benches. Every case asserts
the refusal's type *and* that nothing stored changed (the directory's bytes, or the bench's
state and clock)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import analogmem
from analogmem import EmulatedBench, StorageError
from analogmem.emulator import chipstate
from analogmem.emulator.bench import ChunkedTargets
from analogmem.emulator.chipstate import FileArrays, header_crc

N = 20_011  # several checksum chunks (set small below), the last one partial
CARDS = ("pcm-nandakumar2019", "rram-wan2022")  # state files g_prog/nu/q_read and g_eff/g_prog/z_relax


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 4096 cells (checksum chunks too), so a 2·10⁴-cell chip has five."""
    monkeypatch.setattr(FileArrays, "CHUNK_CELLS", 4096)


def digest(path: Path) -> dict[str, str]:
    """sha256 of every file of a directory except the lock file (whose note names the
    latest writer): "nothing changed" means these are equal."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(path).iterdir())
            if p.is_file() and p.name != "lock"}


def make_chip(path: Path, card: str = "pcm-nandakumar2019", n: int = N, seed: int = 1) -> np.ndarray:
    """A programmed, closed chip; returns its read at 1 h (taken with a twin in memory)."""
    targets = np.random.default_rng(seed).uniform(1e-6, 20e-6, n)
    with EmulatedBench(card, n, seed=seed, state_dir=path) as b:
        b.program(targets)
    twin = EmulatedBench(card, n, seed=seed)
    twin.program(targets)
    return twin.read(3600.0)


# ------------------------------------------------------------------ the lock (item 1)
_HOLD = textwrap.dedent("""
    import sys
    from analogmem import EmulatedBench
    b = EmulatedBench.open(sys.argv[1], read_only=sys.argv[2] == "ro")
    print("holding", flush=True)
    sys.stdin.readline()
    b.read(3600.0)
    b.close()
    print("released", flush=True)
""")


def _holder(path: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding", proc.stderr.read()
    return proc


def _release(proc: subprocess.Popen) -> None:
    out, err = proc.communicate("go\n", timeout=120)
    assert proc.returncode == 0 and "released" in out, err


def test_a_chip_open_in_another_process_is_refused_naming_it(tmp_path):
    path = tmp_path / "chip"
    make_chip(path)
    before = digest(path)
    proc = _holder(path, "rw")
    try:
        for attempt in (lambda: EmulatedBench.open(path), lambda: EmulatedBench.open(path, read_only=True)):
            with pytest.raises(StorageError, match=rf"in use: opened for writing by process {proc.pid} on host"):
                attempt()
        with pytest.raises(StorageError, match="already holds a chip"):
            EmulatedBench("pcm-nandakumar2019", N, seed=0, state_dir=path)
    finally:
        _release(proc)
    after = digest(path)
    assert set(after) == set(before) and after["g_prog.bin"] == before["g_prog.bin"]  # its read moved the clock only
    EmulatedBench.open(path).close()  # free again once the holder closed it


def test_read_only_opens_share_a_chip_and_keep_writers_out(tmp_path):
    path = tmp_path / "chip"
    expected = make_chip(path)
    before = digest(path)
    proc = _holder(path, "ro")
    try:
        with EmulatedBench.open(path, read_only=True) as b:  # a second reader is welcome
            np.testing.assert_array_equal(b.read(3600.0), expected)
            b.wait(10.0)
            with pytest.raises(StorageError, match="read-only"):
                b.program(np.full(N, 5e-6))
        with pytest.raises(StorageError, match="open read-only in another bench"):
            EmulatedBench.open(path)
    finally:
        _release(proc)
    assert digest(path) == before  # read-only benches wrote nothing, not even the clock


_CREATE = textwrap.dedent("""
    import sys
    import numpy as np
    from analogmem import EmulatedBench, StorageError
    sys.stdin.readline()  # start together
    try:
        b = EmulatedBench("pcm-nandakumar2019", 5000, seed=int(sys.argv[2]), state_dir=sys.argv[1])
        b.program(np.full(5000, 5e-6 * (1 + int(sys.argv[2]))))
        b.close()
        print("made")
    except StorageError as exc:
        print("refused", exc)
""")


def test_simultaneous_creations_of_one_directory_let_exactly_one_win(tmp_path):
    for trial in range(3):
        path = tmp_path / f"chip{trial}"
        procs = [subprocess.Popen([sys.executable, "-c", _CREATE, str(path), str(i)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate("\n", timeout=180) for p in procs]
        verdicts = sorted(o.split()[0] for o, _ in outs)
        assert verdicts == ["made", "refused"], outs
        winner = [i for i, (o, _) in enumerate(outs) if o.startswith("made")][0]
        with EmulatedBench.open(path) as b:  # the survivor is intact and is the winner's chip
            assert b.cell_state()["g_prog"].mean() == pytest.approx(5e-6 * (1 + winner), rel=0.3)


# ------------------------------------------------------------------ kill mid-program (items 1, 7, 31)
_KILL = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from analogmem import EmulatedBench
    from analogmem.emulator.bench import ChunkedTargets
    from analogmem.emulator.chipstate import FileArrays
    FileArrays.CHUNK_CELLS = 4096
    bench = EmulatedBench.open(sys.argv[1])
    seen = set()
    def make(lo, hi):
        if lo in seen and lo >= 8192:  # the programming pass, part-way
            print("programming", flush=True)
            sys.stdin.readline()        # hold the chip dirty and locked until told
            os.kill(os.getpid(), signal.SIGKILL)
        seen.add(lo)
        return np.full(hi - lo, 15e-6)
    bench.program(ChunkedTargets(bench.n_cells, make))
""")


def test_a_chip_being_programmed_elsewhere_is_in_use_then_refused_as_interrupted_after_a_kill(tmp_path):
    path = tmp_path / "chip"
    make_chip(path)
    proc = subprocess.Popen([sys.executable, "-c", _KILL, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "programming", proc.stderr.read()
    with pytest.raises(StorageError, match="in use"):  # not "interrupted": it is being programmed
        EmulatedBench.open(path)
    proc.communicate("kill\n", timeout=120)
    assert proc.returncode == -signal.SIGKILL
    half = digest(path)
    with pytest.raises(StorageError, match=r"interrupted while being programmed \(operation 'program'\)"):
        EmulatedBench.open(path)
    with pytest.raises(StorageError, match="interrupted"):
        EmulatedBench.open(path, read_only=True)
    assert digest(path) == half


def test_a_bench_interrupted_mid_program_refuses_reads_until_a_full_program(tmp_path):
    """Ctrl-C in the second chunk (in memory and on disk): the live bench serves no
    half-programmed cell; a complete program makes it usable (and the chip clean) again."""
    targets = np.full(N, 12e-6)
    for where in (None, tmp_path / "chip"):
        bench = EmulatedBench("pcm-nandakumar2019", N, seed=3, state_dir=where)
        bench.program(np.full(N, 3e-6))
        seen = set()

        def make(lo: int, hi: int) -> np.ndarray:
            if lo in seen and lo >= 4096:
                raise KeyboardInterrupt
            seen.add(lo)
            return targets[lo:hi]

        chunked = ChunkedTargets(N, make)
        if where is None:  # in memory the targets stream a chunk at a time only when chunked
            with pytest.raises(KeyboardInterrupt):
                bench.program(chunked)
        else:
            with pytest.raises(KeyboardInterrupt):
                bench.program(chunked)
        clock = bench.time_s
        for call in (bench.read, lambda: bench.read(addresses=[1, 2]), lambda: bench.read_at(1.0),
                     bench.cell_state, lambda: bench.program(np.full(2, 1e-6), addresses=[0, 1])):
            with pytest.raises(StorageError, match="half-programmed"):
                call()
        assert bench.time_s == clock
        bench.program(targets)  # a full program heals it
        twin = EmulatedBench("pcm-nandakumar2019", N, seed=3)
        twin.program(np.full(N, 3e-6))
        twin._op_seed()  # the interrupted program drew its operation seed
        twin.program(targets)
        np.testing.assert_array_equal(bench.read(60.0), twin.read(60.0))
        if where is not None:
            bench.close()
            EmulatedBench.open(where).close()  # clean again


# ------------------------------------------------------------------ checksums (item 5)
@pytest.mark.parametrize("card", CARDS)
def test_a_flipped_bit_in_any_state_file_is_refused_on_every_read_path(tmp_path, card):
    path = tmp_path / "chip"
    make_chip(path, card)
    for name in chipstate.state_keys(analogmem.load_device(card)):
        f = path / f"{name}.bin"
        clean = f.read_bytes()
        for cell in (5, 9000, N - 1):  # first chunk, a middle one, the partial last one
            raw = bytearray(clean)
            byte = cell * 8 + 3
            raw[byte] ^= 0x10
            f.write_bytes(bytes(raw))
            before = digest(path)
            for read in (lambda b: b.read(3600.0), lambda b: b.read(addresses=[cell]),
                         lambda b: b.read(addresses=range(cell, min(N, cell + 10))), lambda b: b.read_at(60.0),
                         lambda b: b.program(np.full(1, 5e-6), addresses=[cell])):
                with EmulatedBench.open(path) as b, pytest.raises(StorageError, match=rf"{name}\.bin cells "
                                                                   r"\d+\.\.\d+ do not match their checksum"):
                    read(b)
            assert digest(path) == before, (name, cell)
        f.write_bytes(clean)
    with EmulatedBench.open(path) as b:
        b.read(3600.0)


def test_nan_or_absurd_state_with_a_valid_checksum_is_refused(tmp_path):
    path = tmp_path / "chip"
    make_chip(path)
    header = json.loads((path / "header.json").read_text())
    for name, value in (("g_prog", np.nan), ("g_prog", -5e-6), ("nu", 1.96e33), ("q_read", np.inf)):
        g = np.fromfile(path / f"{name}.bin", dtype="<f8")
        bad = g.copy()
        bad[7] = value
        bad.tofile(path / f"{name}.bin")
        h = json.loads(json.dumps(header))
        h["crc32c"][name][0] = chipstate.crc32c(bad[:4096])  # a crafted file: the checksum matches
        h["header_crc32c"] = header_crc(h)
        (path / "header.json").write_text(json.dumps(h))
        before = digest(path)
        with EmulatedBench.open(path) as b, pytest.raises(StorageError, match=rf"{name} holds 1 value\(s\) outside"):
            b.read(3600.0)
        assert digest(path) == before
        g.tofile(path / f"{name}.bin")
    (path / "header.json").write_text(json.dumps(header))


@pytest.mark.parametrize("edit", [
    lambda h: h["bench"].update(programmed=False),
    lambda h: h["bench"]["seed"].update(n_children_spawned=h["bench"]["seed"]["n_children_spawned"] + 1),
    lambda h: h["bench"]["clock"].update(time_s=-1.0),
    lambda h: h["bench"]["clock"].update(time_s=float("nan")),
    lambda h: h.update(n_cells=h["n_cells"] - 1),
    lambda h: h.update(dirty=False, extra="x"),
], ids=["programmed", "n_children_spawned", "negative-clock", "nan-clock", "n_cells", "extra-key"])
def test_an_edited_header_is_refused_by_its_checksum(tmp_path, edit):
    path = tmp_path / "chip"
    make_chip(path)
    h = json.loads((path / "header.json").read_text())
    edit(h)
    (path / "header.json").write_text(json.dumps(h))
    before = digest(path)
    for ro in (False, True):
        with pytest.raises(StorageError, match="header.json does not match its checksum"):
            EmulatedBench.open(path, read_only=ro)
    assert digest(path) == before


@pytest.mark.parametrize("craft, message", [
    (lambda h: h["bench"]["clock"].update(time_s=-1.0), "clock.time_s must be a finite number >= 0"),
    (lambda h: h["bench"]["clock"].update(time_s=float("nan")), "clock.time_s"),
    (lambda h: h["bench"]["clock"].update(last_program_s=1e9), "program after the current time"),
    (lambda h: h["bench"].update(dtype="float32"), r"\w+\.bin is float64 but the bench's dtype is float32"),
    (lambda h: h["bench"].update(dtype="complex128"), "dtype 'complex128' is not float64 or float32"),
    (lambda h: h["arrays"].update(nu="<i8"), "array 'nu' of dtype '<i8'"),
    (lambda h: h.update(n_cells="abc"), "n_cells must be a positive integer"),
    (lambda h: h["bench"].update(programmed="yes"), "programmed must be true or false"),
    (lambda h: h["bench"].update(fault_key=[1, 2]), "fault_key"),
    (lambda h: h["bench"].pop("seed"), "malformed header"),
    (lambda h: h["crc32c"].update(nu=[0]), "checksums of 'nu' are malformed"),
], ids=["negative-clock", "nan-clock", "future-program", "dtype-mismatch", "junk-dtype", "array-dtype", "n_cells-str",
        "programmed-str", "fault_key", "no-seed", "crc-list"])
def test_a_crafted_header_with_a_valid_checksum_is_refused_by_name(tmp_path, craft, message):
    path = tmp_path / "chip"
    make_chip(path)
    h = json.loads((path / "header.json").read_text())
    craft(h)
    h["header_crc32c"] = header_crc(h)
    (path / "header.json").write_text(json.dumps(h))
    before = digest(path)
    with pytest.raises(StorageError, match=message):
        EmulatedBench.open(path)
    assert digest(path) == before


@pytest.mark.parametrize("content", ["[1, 2]", "{", "", '"text"', "[" * 100_000 + "]" * 100_000])
def test_a_header_that_is_not_a_json_object_is_refused(tmp_path, content):
    path = tmp_path / "chip"
    make_chip(path)
    (path / "header.json").write_text(content)
    before = digest(path)
    with pytest.raises(StorageError, match="analogmem chip"):
        EmulatedBench.open(path)
    assert digest(path) == before


def test_paths_that_are_not_chips_are_refused_without_writing(tmp_path):
    for where in ("/proc/self", "/dev", str(tmp_path)):
        before = sorted(os.listdir(where)) if where == str(tmp_path) else None
        with pytest.raises(StorageError, match="not a readable analogmem chip"):
            EmulatedBench.open(where)
        if before is not None:
            assert sorted(os.listdir(where)) == before  # no lock file left in a foreign folder
    for empty in ("", b""):
        with pytest.raises(StorageError, match="state_dir is empty"):
            EmulatedBench.open(empty)


# ------------------------------------------------------------------ sizes (item 4)
def test_a_state_file_truncated_under_an_open_bench_is_not_zero_extended(tmp_path):
    path = tmp_path / "chip"
    make_chip(path)
    b = EmulatedBench.open(path)
    os.truncate(path / "nu.bin", 1000)
    before = digest(path)
    for call in (lambda: b.program(np.full(3, 5e-6), addresses=[1, 2, 3]),
                 lambda: b.program(np.full(N, 5e-6)), lambda: b.read(addresses=[1]), lambda: b.read(3600.0)):
        with pytest.raises(StorageError, match=r"nu\.bin (has 1000 bytes|ends early)"):
            call()
    assert digest(path) == before and (path / "nu.bin").stat().st_size == 1000
    b.close()
    with pytest.raises(StorageError, match=r"nu\.bin has 1000 bytes"):
        EmulatedBench.open(path)


def test_a_state_file_replaced_by_something_else_is_refused(tmp_path):
    path = tmp_path / "chip"
    make_chip(path)
    (path / "nu.bin").unlink()
    with pytest.raises(StorageError, match=r"state file nu\.bin is missing"):
        EmulatedBench.open(path)
    os.mkfifo(path / "nu.bin")
    with pytest.raises(StorageError, match=r"nu\.bin is not a regular file"):
        EmulatedBench.open(path)


# ------------------------------------------------------------------ foreign folders (item 2)
def test_a_non_empty_folder_is_not_taken_over(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "card.toml").write_text("my own notes\n")
    (folder / "g_prog.bin").write_bytes(b"precious")
    before = digest(folder)
    with pytest.raises(StorageError, match=r"not empty and is not an analogmem chip \(it holds card\.toml, g_prog\.bin"):
        EmulatedBench("pcm-nandakumar2019", 100, seed=0, state_dir=folder)
    assert digest(folder) == before and sorted(os.listdir(folder)) == ["card.toml", "g_prog.bin"]
    (folder / "g_prog.bin").unlink()
    (folder / "card.toml").unlink()
    (folder / "lock").write_text("my lock notes")  # a user's file named like ours is theirs
    with pytest.raises(StorageError, match="it holds lock"):
        EmulatedBench("pcm-nandakumar2019", 100, seed=0, state_dir=folder)
    assert (folder / "lock").read_text() == "my lock notes"


def test_an_empty_state_dir_string_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for empty in ("", b""):
        with pytest.raises(StorageError, match="state_dir is empty"):
            EmulatedBench("pcm-nandakumar2019", 100, seed=0, state_dir=empty)
    assert os.listdir(tmp_path) == []


def test_an_existing_empty_folder_is_used(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with EmulatedBench("pcm-nandakumar2019", 100, seed=0, state_dir=folder) as b:
        b.program(np.full(100, 5e-6))
    with EmulatedBench.open(folder) as b:
        assert b.read().shape == (100,)


# ------------------------------------------------------------------ full disks (items 7, 25)
def test_a_chip_larger_than_the_free_space_is_refused_at_create(tmp_path):
    where = tmp_path / "big"
    with pytest.raises(StorageError, match="bytes free, the chip's state needs"):
        EmulatedBench("pcm-nandakumar2019", 10 ** 15, seed=0, state_dir=where)
    assert not where.exists()  # no empty directory left behind  # no empty directory left behind


def test_enospc_mid_program_is_a_storage_error_and_poisons_the_bench(tmp_path, monkeypatch):
    path = tmp_path / "chip"
    make_chip(path)
    b = EmulatedBench.open(path)
    real = chipstate._transfer_all
    calls = []

    def full_disk(fd, view, offset, write, what):
        if write:
            calls.append(offset)
            if len(calls) > 2:
                raise OSError(28, "No space left on device")
        return real(fd, view, offset, write, what)

    monkeypatch.setattr(chipstate, "_transfer_all", full_disk)
    with pytest.raises(StorageError, match=r"writing \w+\.bin failed: \[Errno 28\] No space left on device"):
        b.program(np.full(N, 7e-6))
    with pytest.raises(StorageError, match="half-programmed"):
        b.read()
    b.close()
    with pytest.raises(StorageError, match="interrupted while being programmed"):
        EmulatedBench.open(path)


def test_a_failed_header_save_rolls_the_clock_and_random_state_back(tmp_path, monkeypatch):
    path = tmp_path / "chip"
    expected = make_chip(path)
    b = EmulatedBench.open(path)
    before = digest(path)
    spawned = b.seed_sequence.n_children_spawned

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(chipstate, "atomic_write_bytes", full_disk)
    for call in (lambda: b.wait(10.0), lambda: b.read(3600.0), lambda: b.read(3600.0, addresses=[3]),
                 lambda: b.bake(10.0, 350.0) if b.device.retention.enabled else b.wait(1.0)):
        with pytest.raises(StorageError, match=r"cannot write header\.json: \[Errno 28\]"):
            call()
        assert b.time_s == 0.0 and b.seed_sequence.n_children_spawned == spawned
    assert digest(path) == before
    monkeypatch.undo()
    np.testing.assert_array_equal(b.read(3600.0), expected)  # as if the failed calls never happened
    b.close()


# ------------------------------------------------------------------ restore (item 15)
@pytest.mark.parametrize("key, value", [("g_prog", np.nan), ("g_prog", -1e-5), ("nu", np.inf), ("t_prog_s", -1.0),
                                        ("stuck", 7)])
def test_restore_state_refuses_values_no_program_writes(key, value):
    b = EmulatedBench("pcm-nandakumar2019", 100, seed=0)
    b.program(np.full(100, 5e-6))
    state = b.cell_state()
    bad = {k: v.copy() for k, v in state.items()}
    bad[key][3] = value
    with pytest.raises(StorageError, match=rf"cell state '{key}'.*outside"):
        b.restore_state(bad, time_s=10.0, seed=np.random.SeedSequence(1))
    for k, v in b.cell_state().items():
        np.testing.assert_array_equal(v, state[k])
    assert b.time_s == 0.0


def test_a_snapshot_rewritten_with_a_valid_checksum_holding_nan_is_refused(tmp_path):
    import hashlib as hl

    from safetensors.numpy import load as st_load, save as st_save

    from analogmem.storage import snapshots

    from analogmem.storage import make_encoder

    store = analogmem.EmulatedStore("pcm-nandakumar2019", 400, seed=0)
    store.put("w", np.linspace(-1, 1, 50), encoder=make_encoder("differential", 2))
    path = snapshots.save_snapshot(store, tmp_path / "s.safetensors")
    blob = path.read_bytes()
    import struct

    (hlen,) = struct.unpack("<Q", blob[:8])
    meta = json.loads(blob[8:8 + hlen])["__metadata__"]
    for change in (lambda g: g.__setitem__(0, np.nan), lambda g: np.negative(g, out=g)):
        tensors = {k: v.copy() for k, v in st_load(blob).items()}
        change(tensors["cells/g_prog"])
        forged = st_save(tensors, metadata=dict(meta, checksum_sha256=snapshots._ZERO_SUM))
        pos = snapshots._checksum_position(forged)
        forged = forged[:pos] + hl.sha256(forged).hexdigest().encode() + forged[pos + 64:]
        (tmp_path / "forged.safetensors").write_bytes(forged)
        with pytest.raises(StorageError, match="g_prog.*outside"):
            snapshots.load_snapshot(tmp_path / "forged.safetensors")
    assert path.read_bytes() == blob


@pytest.mark.parametrize("drop", ["bench", "store", "device", "random_state"])
def test_a_crafted_snapshot_missing_keys_is_a_storage_error(tmp_path, drop):
    import hashlib as hl
    import struct

    from safetensors.numpy import load as st_load, save as st_save

    from analogmem.storage import make_encoder, snapshots

    store = analogmem.EmulatedStore("pcm-nandakumar2019", 400, seed=0)
    store.put("w", np.linspace(-1, 1, 50), encoder=make_encoder("differential", 2))
    blob = snapshots.save_snapshot(store, tmp_path / "s.safetensors").read_bytes()
    (hlen,) = struct.unpack("<Q", blob[:8])
    meta = json.loads(json.loads(blob[8:8 + hlen])["__metadata__"]["analogmem"])
    meta.pop(drop)
    forged = st_save(st_load(blob), metadata={"analogmem": json.dumps(meta), "checksum_sha256": snapshots._ZERO_SUM})
    pos = snapshots._checksum_position(forged)
    forged = forged[:pos] + hl.sha256(forged).hexdigest().encode() + forged[pos + 64:]
    (tmp_path / "forged.safetensors").write_bytes(forged)
    with pytest.raises(StorageError, match=rf"is malformed: KeyError: '{drop}'"):
        snapshots.load_snapshot(tmp_path / "forged.safetensors")


def test_store_model_refuses_meta_tensors_by_name():
    torch = pytest.importorskip("torch")
    store = analogmem.EmulatedStore("pcm-nandakumar2019", 100, seed=0)
    with pytest.raises(StorageError, match="tensor 'weight' is on torch's meta device"):
        analogmem.store_model(torch.nn.Linear(2, 2, device="meta"), store)
    assert store.cells_used == 0


def test_a_damaged_chunk_fails_only_the_reads_that_need_it(tmp_path):
    path = tmp_path / "chip"
    expected = make_chip(path)
    raw = bytearray((path / "g_prog.bin").read_bytes())
    raw[9000 * 8] ^= 0x01  # chunk 2 (cells 8192..12287)
    (path / "g_prog.bin").write_bytes(bytes(raw))
    with EmulatedBench.open(path) as b:
        twin_clock = b.time_s
        with pytest.raises(StorageError, match=r"g_prog\.bin cells 8192\.\.12287 do not match"):
            b.read(3600.0)
        assert b.time_s == twin_clock  # the failed read moved nothing
        # the chunks before it read (the read-ahead of the damaged one raises nothing here)
        np.testing.assert_array_equal(b.read(3600.0, addresses=range(0, 4096)), expected[:4096])
        with pytest.raises(StorageError, match="do not match"):
            b.read(addresses=[9001])


def test_enospc_while_creating_a_chip_leaves_no_directory(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(chipstate, "atomic_write_bytes", full_disk)
    where = tmp_path / "new" / "chip"
    with pytest.raises(StorageError, match=r"cannot write card\.toml: \[Errno 28\] No space left on device"):
        EmulatedBench("pcm-nandakumar2019", 1000, seed=0, state_dir=where)
    assert not (tmp_path / "new").exists()  # nor the folders made for it
    existing = tmp_path / "empty"
    existing.mkdir()
    with pytest.raises(StorageError, match="No space left"):
        EmulatedBench("pcm-nandakumar2019", 1000, seed=0, state_dir=existing)
    assert existing.is_dir() and os.listdir(existing) == []  # the user's empty folder stays, empty
