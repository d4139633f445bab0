"""Small file helpers: every file analogmem writes goes through an atomic replace, and every
results JSON (``--json PATH``) carries its provenance (:func:`write_json`)."""

from __future__ import annotations

import datetime
import glob
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "remove_stale_temps", "save_figure", "write_json", "provenance",
           "progress", "check_paths"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync,
    then rename over the target. A crash leaves either the old file or the new one.

    The temporary file is ``.NAME.PID.XXXXXXXX.tmp``; a process killed while writing (no
    chance to clean up) leaves it behind, and the next write of the same ``path`` removes
    such files of processes that no longer exist (:func:`remove_stale_temps`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or a number we cannot test): leave its file alone
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write_bytes` left beside ``path`` in
    processes that were killed while writing it (their process no longer exists on this
    machine). Returns the files removed. Temporary files of live processes, and of writers
    on another machine sharing the folder whose process id happens to be unused here, are
    the limits of this rule: the first are kept, the second could be removed."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp")
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        m = pattern.fullmatch(tmp.name)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name one file (after symbolic links; hard links too, where both exist)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_place(label: str, path: Path, folder: bool) -> None:
    """Refuse an output whose place cannot be written, by trying: a probe file is made and
    removed in the nearest folder that exists (nothing else is made)."""
    from .errors import PathError

    p = Path(os.path.abspath(path))
    if p.exists() or p.is_symlink():
        if folder and not p.is_dir():
            raise PathError(f"{label} {str(path)!r} is not a folder")
        if not folder and p.is_dir():
            raise PathError(f"{label} {str(path)!r} is a folder, not a file")
        if not folder and not p.is_file():
            raise PathError(f"{label} {str(path)!r} is not a regular file (a device, FIFO or socket)")
    where = p if folder and p.is_dir() else p.parent
    while not where.exists():
        where = where.parent
    if not where.is_dir():
        raise PathError(f"{label} {str(path)!r} cannot be written: {str(where)!r} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".analogmem-probe.", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise PathError(f"{label} {str(path)!r} cannot be written: {exc.strerror or exc} in "
                              f"{str(where)!r}") from None


def check_paths(inputs: dict[str, Any] | None = None, outputs: dict[str, Any] | None = None,
                folders: dict[str, Any] | None = None, files: dict[str, Any] | None = None) -> None:
    """Check a command's paths before its work starts; raises
    :class:`~analogmem.errors.PathError` naming the option.

    Args:
        inputs: option label (e.g. ``"--device"``) → path that may be read (None or a list
            of paths allowed; names that are not files, such as bundled card names, are fine).
        files: like ``inputs``, but each must be an existing regular file.
        outputs: option label (``"--out"``) → file written (None: not given).
        folders: option label → folder written into (made if missing).

    Refused: an output (file or folder) that resolves to an input or to another output
    (symbolic and hard links followed); an output file that is an existing folder, device
    or FIFO; an output whose folder cannot be made or written (tried with a probe file)."""
    from .errors import PathError

    def items(d: dict[str, Any] | None) -> list[tuple[str, Path]]:
        out = []
        for label, v in (d or {}).items():
            for one in (v if isinstance(v, (list, tuple)) else [v]):
                if one is not None and os.fspath(one) != "":
                    out.append((label, Path(os.fspath(one))))
                elif one is not None:
                    raise PathError(f"{label} is empty: name a file")
        return out

    ins, outs, dirs = items(inputs) + items(files), items(outputs), items(folders)
    for label, path in items(files):
        if not path.exists():
            from ._data import missing_data_hint

            raise PathError(f"{label} {str(path)!r} does not exist{missing_data_hint(path)}")
        if not path.is_file():
            raise PathError(f"{label} {str(path)!r} is not a regular file (a folder, device or FIFO is not read)")
    written = outs + dirs
    for i, (label, path) in enumerate(written):
        for in_label, in_path in ins:
            if _same(path, in_path):
                raise PathError(f"{label} {str(path)!r} is the input {in_label} ({str(in_path)!r}): writing it "
                                      "would destroy what is read; choose another path")
        for other_label, other in written[:i]:
            if _same(path, other):
                raise PathError(f"{label} and {other_label} are the same file ({str(path)!r}): one would "
                                      "overwrite the other; give each its own path")
    for label, path in dirs:
        _check_place(label, path, folder=True)
    for label, path in outs:
        _check_place(label, path, folder=False)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Render a matplotlib figure to PNG and write it atomically (the caller closes it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def help_text(doc: str | None) -> str:
    """A module docstring as plain text for ``--help``: reStructuredText roles
    (``:class:`~a.b.C``` → ``C``, ``:func:`a.f``` → ``a.f``), double back-quotes and the
    literal-block ``::`` are dropped, and sentences meant for programmers (how to wire a
    subcommand in) are left out."""
    import re

    def role(m: re.Match) -> str:
        target = m.group(1).strip()
        return target[1:].split(".")[-1] if target.startswith("~") else target

    text = re.sub(r":[a-z]+:`([^`]*)`", role, doc or "")
    text = text.replace("``", "")
    text = re.sub(r"(?<=\S)::$", ":", text, flags=re.M)
    text = re.sub(r"\s*Wire it in with\s[^.]*\.", "", text)
    text = "\n".join(ln for ln in text.splitlines() if "add_subparser" not in ln)
    return text.strip() + "\n"


def progress(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm progress bar (``tqdm.auto``) over ``iterable`` or of ``total=`` steps, shown only
    when ``enabled`` *and* stderr is a terminal (tqdm's ``disable=None``): a run piped into a
    file or a CI log gets no bar. Other keyword arguments go to tqdm (``desc``, ``unit``, ...)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if enabled else True, **kwargs)


#: Packages whose versions every results file records (absent ones as null).
_PROVENANCE_PACKAGES = ("numpy", "scipy", "torch", "flwr", "ray", "constriction", "transformers", "pandas")
_IMPORTED_AT = time.time()


def _process_wall_s() -> float:
    """Seconds since this process started (interpreter start-up and imports included);
    falls back to the time since analogmem was imported where /proc is not available."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after "pid (comm)"
        with open("/proc/uptime", "rb") as fh:
            uptime_s = float(fh.read().split()[0])
        return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED_AT


def _git_commit() -> dict[str, Any]:
    """The commit of the checkout analogmem runs from (an editable install), if any."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip() != ""
        return {"git_commit": sha, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def provenance(seed: Any = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where a result comes from: analogmem version and git commit, Python and package
    versions, threads, seed, the command line and its settings, when it was written and
    the wall time of the whole process so far (s, start-up included)."""
    from importlib import metadata

    from ._version import __version__

    versions = {}
    for name in _PROVENANCE_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count()
    torch = sys.modules.get("torch")
    threads = {"cores_available": cores, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
               "torch_threads": torch.get_num_threads() if torch is not None and hasattr(torch, "get_num_threads")
               else None}
    if settings is not None:
        settings = {k: _jsonable(v) for k, v in settings.items() if not callable(v)}
    return {"analogmem_version": __version__, **_git_commit(), "python": sys.version.split()[0],
            "platform": sys.platform, "packages": versions, "threads": threads, "seed": _jsonable(seed),
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else None,
            "settings": settings,
            "written_at_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "wall_time_s": round(_process_wall_s(), 3)}


def write_json(path: str | os.PathLike, payload: dict[str, Any], *, seed: Any = None,
               settings: dict[str, Any] | None = None) -> Path:
    """Write a results dict as JSON atomically, with a ``"provenance"`` key added
    (:func:`provenance`); ``settings`` are the command's settings (e.g. ``vars(args)``)."""
    if not isinstance(payload, dict):
        from .errors import SettingTypeError

        raise SettingTypeError(f"a results file holds a dict, got {type(payload).__name__}")
    body = dict(payload)
    body["provenance"] = provenance(seed, settings)
    return atomic_write_text(path, json.dumps(body, indent=2, default=_jsonable) + "\n")
