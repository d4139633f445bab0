"""Chips whose per-cell state lives in files (``EmulatedBench(..., state_dir=PATH)``): the
same values as in memory, reopened bit-identically, and refused after a crash mid-program."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import analogmem
from analogmem import EmulatedBench, StorageError
from analogmem.emulator.bench import ChunkedTargets
from analogmem.emulator import chipstate
from analogmem.emulator.chipstate import FileArrays, supports_direct_io

N = 100_003  # several file chunks (set small below), the last one partial


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 10⁴ cells, so a 10⁵-cell chip streams through many of them."""
    monkeypatch.setattr(FileArrays, "CHUNK_CELLS", 10_000)


def _script(bench_ram: EmulatedBench, bench_disk: EmulatedBench, targets: np.ndarray) -> None:
    """The same calls on both benches, comparing every result bit for bit."""
    rng = np.random.default_rng(5)
    for b in (bench_ram, bench_disk):
        b.program(targets)
    np.testing.assert_array_equal(bench_disk.read(86400.0), bench_ram.read(86400.0))
    addr = np.sort(rng.choice(N, 3000, replace=False))
    for b in (bench_ram, bench_disk):
        b.wait(3600.0)
        b.program(targets[addr] * 0.5, addresses=addr)
    np.testing.assert_array_equal(bench_disk.read(10.0), bench_ram.read(10.0))
    np.testing.assert_array_equal(bench_disk.read(60.0, addresses=addr[::7]), bench_ram.read(60.0, addresses=addr[::7]))
    joined = np.concatenate([v for _, v in bench_disk.read_chunks(3600.0, chunk_cells=7_777)])
    np.testing.assert_array_equal(joined, bench_ram.read(3600.0))
    for k, v in bench_disk.cell_state().items():
        np.testing.assert_array_equal(v, bench_ram.cell_state()[k], err_msg=k)


@pytest.mark.parametrize("device, dtype", [("pcm-nandakumar2019", "float32"), ("rram-wan2022", "float64")])
def test_chip_on_disk_gives_the_same_values_as_in_memory(tmp_path, device, dtype):
    dev = analogmem.load_device(device)
    targets = np.random.default_rng(1).uniform(0, dev.g_max_S, N)
    ram = EmulatedBench(dev, N, seed=11, dtype=dtype)
    disk = EmulatedBench(dev, N, seed=11, dtype=dtype, state_dir=tmp_path / "chip")
    assert disk.state_nbytes == 0 and disk.state_dir == tmp_path / "chip"
    _script(ram, disk, targets)
    assert disk.state_nbytes == 0  # all of it is in the files
    files = {p.name: p.stat().st_size for p in (tmp_path / "chip").iterdir()}
    for k in ram.cell_state():
        if k not in ("t_prog_s", "stuck"):
            assert files[f"{k}.bin"] == N * np.dtype(dtype).itemsize


@pytest.mark.parametrize("chunk_cells", [8192, 10_000])
def test_direct_and_page_cache_io_give_the_same_bits(tmp_path, monkeypatch, chunk_cells):
    """Direct I/O (aligned chunks: 8192 float32 cells = 32 KiB) and its page-cache fallback
    (a chunk of 10⁴ cells is aligned only at offset 0; the chip's last partial block never
    is) give the values of an in-memory bench; both kinds of request really happen."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    if not supports_direct_io(probe):
        pytest.skip("this file system refuses O_DIRECT")
    monkeypatch.setattr(FileArrays, "CHUNK_CELLS", chunk_cells)
    flags, real_open = [], os.open

    def spy(path, mode, *args, **kwargs):
        if str(path).endswith(".bin"):
            flags.append(bool(mode & os.O_DIRECT))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(chipstate.os, "open", spy)
    dev = analogmem.load_device("pcm-nandakumar2019")
    targets = np.random.default_rng(6).uniform(0, dev.g_max_S, N)
    ram = EmulatedBench(dev, N, seed=12, dtype="float32")
    direct = EmulatedBench(dev, N, seed=12, dtype="float32", state_dir=tmp_path / "direct", direct_io=True)
    assert direct._cells.direct_io
    _script(ram, direct, targets)
    assert any(flags) and not all(flags)
    cached = EmulatedBench(dev, N, seed=12, dtype="float32", state_dir=tmp_path / "cached", direct_io=False)
    ram = EmulatedBench(dev, N, seed=12, dtype="float32")
    flags.clear()
    for b in (cached, ram):
        b.program(targets)
    np.testing.assert_array_equal(cached.read(86400.0), ram.read(86400.0))
    assert flags and not any(flags)


def test_a_file_system_refusing_direct_requests_falls_back_to_the_page_cache(tmp_path, monkeypatch):
    """O_DIRECT accepted at open but its requests refused (EINVAL, as some network file
    systems do): the request is redone through the page cache, and so is every later one."""
    import errno
    import fcntl

    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    if not supports_direct_io(probe):
        pytest.skip("this file system refuses O_DIRECT")
    monkeypatch.setattr(FileArrays, "CHUNK_CELLS", 8192)
    real = chipstate._transfer_all

    def refuse_direct(fd, *args):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, *args)

    monkeypatch.setattr(chipstate, "_transfer_all", refuse_direct)
    dev = analogmem.load_device("pcm-nandakumar2019")
    targets = np.random.default_rng(7).uniform(0, dev.g_max_S, N)
    ram = EmulatedBench(dev, N, seed=13, dtype="float32")
    disk = EmulatedBench(dev, N, seed=13, dtype="float32", state_dir=tmp_path / "chip")
    assert disk._cells.direct_io
    for b in (ram, disk):
        b.program(targets)
    np.testing.assert_array_equal(disk.read(86400.0), ram.read(86400.0))
    assert not disk._cells.direct_io


def test_direct_io_required_where_refused_is_a_storage_error(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "O_DIRECT", raising=False)  # a platform or file system without it
    with pytest.raises(StorageError, match="does not support direct I/O"):
        EmulatedBench("pcm-nandakumar2019", 1000, seed=0, state_dir=tmp_path / "chip", direct_io=True)
    bench = EmulatedBench("pcm-nandakumar2019", 1000, seed=0, state_dir=tmp_path / "auto")  # auto: page cache
    assert not bench._cells.direct_io
    bench.program(np.full(1000, 1e-6))


def test_chunked_targets_program_like_an_array(tmp_path):
    dev = analogmem.load_device("pcm-nandakumar2019")
    targets = np.random.default_rng(2).uniform(0, dev.g_max_S, N)
    calls = []

    def make(lo: int, hi: int) -> np.ndarray:
        calls.append((lo, hi))
        return targets[lo:hi]

    ram = EmulatedBench(dev, N, seed=3)
    disk = EmulatedBench(dev, N, seed=3, state_dir=tmp_path / "chip")
    ram.program(targets)
    disk.program(ChunkedTargets(N, make))
    assert len(calls) == 2 * len(range(0, N, 10_000))  # a validation pass, then the programming pass
    np.testing.assert_array_equal(disk.read(86400.0), ram.read(86400.0))


def test_bad_chunked_targets_are_refused_before_any_cell_changes(tmp_path):
    disk = EmulatedBench("pcm-nandakumar2019", N, seed=3, state_dir=tmp_path / "chip")
    disk.program(np.full(N, 10e-6))
    before = disk.cell_state()

    def make(lo: int, hi: int) -> np.ndarray:
        t = np.full(hi - lo, 12e-6)
        if lo <= 95_000 < hi:
            t[95_000 - lo] = np.nan
        return t

    with pytest.raises(analogmem.TargetRangeError, match=r"cells 90000\.\.99999.*not finite"):
        disk.program(ChunkedTargets(N, make))
    for k, v in disk.cell_state().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    with pytest.raises(analogmem.TargetRangeError, match="ChunkedTargets program every cell"):
        disk.program(ChunkedTargets(N - 1, make))
    disk.close()  # releases the chip's lock
    EmulatedBench.open(tmp_path / "chip")  # still clean


def test_reopened_chip_continues_bit_identically(tmp_path):
    dev = analogmem.load_device("pcm-nandakumar2019")
    targets = np.random.default_rng(4).uniform(0, dev.g_max_S, N)
    ram = EmulatedBench(dev, N, seed=8, dtype="float32")
    disk = EmulatedBench(dev, N, seed=8, dtype="float32", state_dir=tmp_path / "chip")
    for b in (ram, disk):
        b.program(targets)
        b.read(86400.0)
        b.wait(100.0)
    disk.close()  # releases the chip's lock (the loop variable b still holds the bench)
    again = EmulatedBench.open(tmp_path / "chip", n_threads=1)
    assert again.dtype == np.float32 and again.time_s == ram.time_s and again.device.name == dev.name
    for k, v in again.cell_state().items():
        np.testing.assert_array_equal(v, ram.cell_state()[k], err_msg=k)
    np.testing.assert_array_equal(again.read(86400.0 * 2), ram.read(86400.0 * 2))
    np.testing.assert_array_equal(again.read(), ram.read())


_CRASH = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from analogmem import EmulatedBench
    from analogmem.emulator.bench import ChunkedTargets
    from analogmem.emulator.chipstate import FileArrays
    FileArrays.CHUNK_CELLS = 10_000
    path, n = sys.argv[1], int(sys.argv[2])
    bench = EmulatedBench("pcm-nandakumar2019", n, seed=1, state_dir=path)
    bench.program(np.full(n, 5e-6))          # a first, complete program
    validated = set()
    def make(lo, hi):
        if lo in validated and lo >= 50_000:  # programming pass, half-way through the chip
            os.kill(os.getpid(), signal.SIGKILL)
        validated.add(lo)
        return np.full(hi - lo, 20e-6)
    bench.program(ChunkedTargets(n, make))
""")


def test_chip_killed_mid_program_is_refused_on_open(tmp_path):
    """A process killed (SIGKILL) half-way through programming leaves the chip marked
    dirty: reopening it raises StorageError naming the interrupted operation, and nothing
    half-written is ever read as valid."""
    path = tmp_path / "chip"
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(path), str(N)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    g = np.fromfile(path / "g_prog.bin", dtype="<f8")
    assert np.any(np.abs(g - 20e-6) < 5e-6) and np.any(np.abs(g - 5e-6) < 3e-6)  # really half-written
    with pytest.raises(StorageError, match="interrupted while being programmed.*'program'"):
        EmulatedBench.open(path)


def test_a_failure_mid_program_leaves_the_chip_refused(tmp_path):
    bench = EmulatedBench("rram-wan2022", N, seed=1, state_dir=tmp_path / "chip")
    bench.program(np.full(N, 5e-6))
    seen = set()

    def make(lo: int, hi: int) -> np.ndarray:
        if lo in seen and lo >= 30_000:
            raise OSError("disk full (injected)")
        seen.add(lo)
        return np.full(hi - lo, 20e-6)

    with pytest.raises(OSError, match="injected"):
        bench.program(ChunkedTargets(N, make))
    with pytest.raises(StorageError, match="half-programmed"):  # the live bench is refused too
        bench.read()
    bench.close()
    with pytest.raises(StorageError, match="interrupted"):
        EmulatedBench.open(tmp_path / "chip")


def test_opening_something_else_is_refused(tmp_path):
    with pytest.raises(StorageError, match="not a readable analogmem chip"):
        EmulatedBench.open(tmp_path)
    path = tmp_path / "chip"
    EmulatedBench("pcm-nandakumar2019", 1000, seed=0, state_dir=path).program(np.full(1000, 1e-6))
    with pytest.raises(StorageError, match="already holds a chip"):
        EmulatedBench("pcm-nandakumar2019", 1000, seed=0, state_dir=path)
    header = json.loads((path / "header.json").read_text())
    (path / "header.json").write_text(json.dumps(dict(header, format_version=99)))
    with pytest.raises(StorageError, match="version"):
        EmulatedBench.open(path)
    (path / "header.json").write_text(json.dumps(header))
    with open(path / "card.toml", "a") as fh:
        fh.write("\n# edited\n")
    with pytest.raises(StorageError, match="sha256"):
        EmulatedBench.open(path)
    card = (path / "card.toml").read_text().replace("\n# edited\n", "")
    (path / "card.toml").write_text(card)
    EmulatedBench.open(path)
    os.truncate(path / "nu.bin", 100)
    with pytest.raises(StorageError, match="nu.bin has 100 bytes"):
        EmulatedBench.open(path)
