"""Every fenced code block of README.md and docs/*.md that is Python or shell runs as written
(issue 26: the README's main block once failed on its first line).

Which blocks: fences tagged ``python``, or ``bash``/``sh``/``shell``/``console``. Blocks tagged
``text``/``toml`` (or untagged) are not code and are not run. An HTML comment on the lines
just above a fence changes how it is run:

* ``<!-- docs-test: skip REASON -->`` — not run (needs hardware, a GPU, your own models, ...);
  the reason is the skip message.
* ``<!-- docs-test: with {"OLD": "NEW", ...} REASON -->`` — run after these literal
  replacements: the smaller setting of a block that takes minutes as written.
* ``<!-- docs-test: by tests/test_X.py -->`` or the lead's ``<!-- readme-test: NAME -->`` —
  run as written by that test (checked here: the file exists and names the doc or marker).

A block that reads ``$ANALOGMEM_DATA`` runs with it pointed at the measured data sets when
they are on this machine (``tests/stats_helpers.SHARED_DATA``), and is skipped otherwise.

Python blocks run in a fresh interpreter, shell blocks with ``bash -e -o pipefail``; both in
a temporary folder where ``benchmarks/``, ``scripts/``, ``devices/``, ``notebooks/`` and
``tests/`` of the checkout are linked and ``docs/results/`` is empty, so a command that
regenerates a result of the docs writes there, never into the checkout. The interpreter's
``bin`` folder (``analogmem``) comes first on ``PATH``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from stats_helpers import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = {"python", "py", "python3"}
SHELL = {"bash", "sh", "shell", "console"}
LINKED = ("benchmarks", "scripts", "devices", "notebooks", "tests")
_MARK = re.compile(r"<!--\s*(docs-test|readme-test):\s*(.*?)\s*-->", re.S)


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marks: list[tuple[str, str]]

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path`` with the markers in the comment lines just above each."""
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```\s*([A-Za-z0-9_+-]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        marks, before = [], "\n".join(lines[max(0, i - 8):i]).rstrip()
        while (m_end := re.search(r"<!--((?:(?!<!--).)*?)-->\s*$", before, re.S)):  # comments just above
            mk = _MARK.fullmatch(m_end.group(0).strip())
            if mk:
                marks.insert(0, (mk.group(1), mk.group(2)))
            before = before[:m_end.start()].rstrip()
        out.append(Block(path, i + 1, m.group(1).lower(), "\n".join(lines[i + 1:j]) + "\n", marks))
        i = j + 1
    return out


ALL = [b for doc in DOCS for b in blocks(doc)]
CODE = [b for b in ALL if b.lang in PYTHON | SHELL]


def test_the_docs_have_code_blocks_and_every_fence_says_what_it_is():
    """Untagged fences would escape this test silently: each says python, bash, text, toml, ..."""
    assert len([b for b in CODE if b.lang in PYTHON]) >= 5 and len([b for b in CODE if b.lang in SHELL]) >= 3
    untagged = [b.id for b in ALL if not b.lang]
    assert not untagged, f"fences without a language (tag them python, bash, text, ...): {untagged}"


def _workdir(tmp_path: Path) -> Path:
    for name in LINKED:
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    (tmp_path / "docs" / "results").mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize("block", CODE, ids=[b.id for b in CODE])
def test_block_runs_as_written(block: Block, tmp_path):
    code = block.code
    for kind, body in block.marks:
        if kind == "readme-test":
            users = [p.name for p in (ROOT / "tests").glob("test_*.py") if f"readme-test: {body}" in p.read_text()]
            assert users, f"{block.id}: no test runs the block marked readme-test: {body}"
            pytest.skip(f"run as written by {', '.join(users)}")
        verb, _, rest = body.partition(" ")
        if verb == "skip":
            pytest.skip(rest or "marked skip")
        elif verb == "by":
            test = ROOT / rest.split()[0]
            assert test.is_file() and block.doc.name in test.read_text(), f"{block.id}: {rest} does not run it"
            pytest.skip(f"run as written by {rest}")
        elif verb == "with":
            subs, end = json.JSONDecoder().raw_decode(rest)
            for old, new in subs.items():
                assert old in code, f"{block.id}: the marker replaces {old!r}, which the block does not contain"
                code = code.replace(old, new)
        else:
            raise AssertionError(f"{block.id}: unknown docs-test marker {body!r}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "MPLBACKEND": "Agg", "PYTHONPATH": ""}
    env.pop("ANALOGMEM_DATA", None)
    if "ANALOGMEM_DATA" in code:
        if not SHARED_DATA.is_dir():
            pytest.skip("needs the measured data sets ($ANALOGMEM_DATA): not on this machine")
        env["ANALOGMEM_DATA"] = str(SHARED_DATA)
    cwd = _workdir(tmp_path)
    cmd = [sys.executable, "-c", code] if block.lang in PYTHON else ["bash", "-e", "-o", "pipefail", "-c", code]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (f"{block.id} ({block.lang}) failed with status {r.returncode}:\n"
                               f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
