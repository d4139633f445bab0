"""The notebooks run end to end (reduced setting)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_store_resnet_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("ANALOGMEM_NOTEBOOK_REDUCED", "1")
    monkeypatch.setenv("ANALOGMEM_CACHE_DIR", str(tmp_path / "cache"))
    nb = nbformat.read(NOTEBOOKS / "store_resnet.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot is shown
    text = "".join(o.get("text", "") for o in outputs)
    assert "differential-mmse" in text and "digital-ecc" in text
