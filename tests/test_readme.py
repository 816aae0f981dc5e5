"""Every Python block of the README runs as written, saved as a script (with smaller budgets)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)
# Budgets shrunk for the test; nothing else in a block changes.
SMALLER = {"1_000_000": "256", "20_000": "400", "n_envs=8": "n_envs=2"}


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_as_a_script(index, tmp_path):
    code = BLOCKS[index]
    for old, new in SMALLER.items():
        code = code.replace(old, new)
    script = tmp_path / f"block_{index}.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, f"README block {index} failed:\n{BLOCKS[index]}\n{result.stderr[-3000:]}"
    assert sorted(path.name for path in tmp_path.iterdir()) == [script.name], "a block left files behind"
