"""docs/examples/study_from_python.ipynb, the notebook README links for studies from Python: valid nbformat 4
JSON, saved without outputs, and every code cell compiles (the cells are not run here: the run cell starts a
study; the end-to-end tests run studies through the same ablation.api)."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "examples" / "study_from_python.ipynb"


def test_the_notebook_is_nbformat_4_without_outputs_and_its_code_compiles():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and isinstance(nb["cells"], list) and nb["cells"]
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and {c["cell_type"] for c in nb["cells"]} <= {"code", "markdown"}
    for i, cell in enumerate(code):
        assert cell["outputs"] == [] and cell["execution_count"] is None, f"code cell {i} was saved with outputs"
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        compile(source, f"{NOTEBOOK.name}, code cell {i}", "exec")
    text = "\n".join("".join(c["source"]) for c in code)
    for needle in ("plan_study(", "spec.total_trials", "spec.plan", "run_study(", "build_report=True",
                   "result.trials", "result.report_path"):
        assert needle in text, needle


def test_readme_links_the_notebook():
    assert "docs/examples/study_from_python.ipynb" in (ROOT / "README.md").read_text()
