"""Every results JSON records where it comes from (analogmem._io.write_json)."""

import json
import subprocess
import sys

import pytest

from analogmem._io import provenance, write_json

KEYS = {"analogmem_version", "git_commit", "git_dirty", "python", "platform", "packages", "threads", "seed",
        "command", "settings", "written_at_utc", "wall_time_s"}


def test_write_json_adds_provenance(tmp_path):
    out = write_json(tmp_path / "r.json", {"accuracy": 0.9}, seed=7, settings={"rounds": 3, "func": print})
    data = json.loads(out.read_text())
    assert data["accuracy"] == 0.9
    p = data["provenance"]
    assert KEYS <= set(p)
    assert p["seed"] == 7 and p["settings"] == {"rounds": 3}
    assert p["packages"]["numpy"] and "torch" in p["packages"] and "ray" in p["packages"]
    assert p["threads"]["cores_available"] >= 1
    assert p["wall_time_s"] > 0


def test_write_json_refuses_a_non_dict(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "r.json", [1, 2])
    assert not (tmp_path / "r.json").exists()


def test_provenance_wall_time_counts_process_start_up():
    # a fresh interpreter that sleeps before asking: the wall time includes the sleep
    code = "import time; time.sleep(0.5); from analogmem._io import provenance; print(provenance()['wall_time_s'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) >= 0.5


def test_a_command_writes_provenance(tmp_path):
    out = tmp_path / "devices.json"
    subprocess.run([sys.executable, "-m", "analogmem", "devices", "--json", str(out)], check=True,
                   capture_output=True)
    data = json.loads(out.read_text())
    assert {d["name"] for d in data["devices"]} >= {"pcm-nandakumar2019", "rram-wan2022"}
    assert data["provenance"]["command"].endswith("devices --json " + str(out))
    assert data["provenance"]["analogmem_version"] == provenance()["analogmem_version"]


def test_progress_bars_are_off_when_stderr_is_not_a_terminal():
    import io

    from analogmem._io import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert list(progress(range(3), file=io.StringIO())) == [0, 1, 2]
    assert progress(range(3), file=io.StringIO()).disable  # a pipe or a log file: no bar
    tty = Terminal()
    bar = progress(total=2, file=tty)
    assert not bar.disable
    bar.update(2)
    bar.close()
    assert "2/2" in tty.getvalue()
    assert progress(total=2, file=Terminal(), enabled=False).disable  # --no-progress
