"""Docstrings and comments cite the paper or a README/docs section, never a file a reader of the
repository cannot open (the design notes beside it, the issue tracker)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATTERN = re.compile(r"DESIGN\.md|DESIGN §|issue #\d")


def test_no_citation_of_files_outside_the_repository():
    hits = []
    for folder in ("analogmem", "ext", "benchmarks", "scripts"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".pyx", ".pxd", ".pyi", ".h", ".sh") or not path.is_file():
                continue
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if PATTERN.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)
