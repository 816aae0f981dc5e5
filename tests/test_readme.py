"""Every Python block of the README and of the docs pages runs as written, saved as a script (with smaller budgets)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md"] + sorted(
    path for path in (REPO / "docs").rglob("*.md") if "runs" not in path.parts and "_build" not in path.parts
)
BLOCKS = [
    (page.relative_to(REPO), block)
    for page in PAGES
    for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
]
# Budgets shrunk for the test; nothing else in a block changes.
SMALLER = {"1_000_000": "256", "20_000": "400", "n_envs=8": "n_envs=2"}


def test_the_readme_and_the_guides_have_python_blocks():
    pages = {page for page, _ in BLOCKS}
    assert Path("README.md") in pages and Path("docs/guides/cpc-in-sb3.md") in pages
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"{page}-{i}" for i, (page, _) in enumerate(BLOCKS)])
def test_doc_block_runs_as_a_script(index, tmp_path):
    page, code = BLOCKS[index]
    for old, new in SMALLER.items():
        code = code.replace(old, new)
    script = tmp_path / f"block_{index}.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, f"{page} block failed:\n{BLOCKS[index][1]}\n{result.stderr[-3000:]}"
    assert sorted(path.name for path in tmp_path.iterdir()) == [script.name], "a block left files behind"
