"""The results tables in README.md and docs/*.md are what scripts/docs_tables.py renders from the JSON in
docs/results/ (issue 19): a number edited by hand, or a table left behind after its JSON was
regenerated, fails here. Regenerating the JSON itself is on demand (the command is printed under
each table); this test only reads files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


from scripts import docs_tables as tables


def test_every_generated_block_equals_what_its_json_renders_to():
    problems = tables.check()
    assert not problems, "docs out of date; run `python -m scripts.docs_tables --write`:\n" + "\n".join(problems)


def test_a_number_edited_by_hand_in_a_doc_table_fails_the_check(tmp_path):
    # copy the repository's documents and results, change one digit inside one generated table
    (tmp_path / "docs").mkdir()
    for path in tables.documents(ROOT):
        if path.is_file():
            (tmp_path / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path.relative_to(ROOT)).write_text(path.read_text())
    (tmp_path / tables.RESULTS).mkdir(parents=True)
    for p in (ROOT / tables.RESULTS).glob("*.json"):
        (tmp_path / tables.RESULTS / p.name).write_text(p.read_text())
    assert tables.check(tmp_path) == []
    doc = tmp_path / "docs" / "dsgd.md"
    text = doc.read_text()
    start = text.index("<!-- generated: dsgd-runs ")
    row = re.compile(r"^\| top-k \+ EF \| .*?(\d+\.\d+)%", re.M).search(text, start)
    i = row.start(1)
    edited = text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:]
    doc.write_text(edited)
    problems = tables.check(tmp_path)
    assert len(problems) == 1 and "docs/dsgd.md" in problems[0]
    assert tables.write(tmp_path) == [doc] and doc.read_text() == text  # --write puts the rendered table back


def test_every_results_json_is_used_and_says_which_command_wrote_it():
    used = tables.markers(ROOT)
    files = sorted((ROOT / tables.RESULTS).glob("*.json"))
    assert files
    for path in files:
        rel = f"{tables.RESULTS}/{path.name}"
        assert rel in used, f"{rel} is not rendered anywhere"
        prov = json.loads(path.read_text())["provenance"]
        assert f"--json {rel}" in prov["command"], f"{rel} was written by {prov['command']!r}"
        assert prov["git_commit"] and prov["packages"]["numpy"]
    assert all((ROOT / rel).is_file() for rel in used)


def test_bad_markers_are_named():
    with pytest.raises(tables.TablesError, match="unknown renderer 'nope'"):
        tables.render_text("<!-- generated: nope docs/results/dsgd.json -->\n<!-- /generated -->", ROOT)
    with pytest.raises(tables.TablesError, match="not closed"):
        tables.render_text("<!-- generated: dsgd-runs docs/results/dsgd.json -->\n| a |", ROOT)
    with pytest.raises(tables.TablesError, match="no such results file"):
        tables.render_text("<!-- generated: dsgd-runs docs/results/missing.json -->\n<!-- /generated -->", ROOT)
