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
           "progress"]


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
        raise TypeError(f"a results file holds a dict, got {type(payload).__name__}")
    body = dict(payload)
    body["provenance"] = provenance(seed, settings)
    return atomic_write_text(path, json.dumps(body, indent=2, default=_jsonable) + "\n")
