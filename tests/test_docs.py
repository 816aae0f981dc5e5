"""The documentation site builds with warnings as errors, and every public name reaches the API page."""

import html
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("cpc_rl", "cpc_rl.sb3", "cpc_rl.envs", "cpc_rl.agents")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(REPO / "docs"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_the_site_opens_on_getting_started_and_lists_every_guide(site):
    index = (site / "index.html").read_text()
    assert "getting started" in re.search(r"<h1>(.*?)<", index).group(1).lower()
    text = html.unescape(re.sub(r"<[^>]+>", "", index))
    assert "pip install torch==2.13.0" in text and "python -m pytest -q" in text  # the two commands
    for page in ("guides/cpc-in-sb3", "guides/run-agent", "guides/environments", "api", "cli", "benchmarks"):
        assert f'href="{page}.html"' in index, page
    assert "--like" in (site / "cli.html").read_text()  # generated from run_agent.py's parser


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_has_a_docstring_on_the_api_page(site, package):
    api = (site / "api.html").read_text()
    module = importlib.import_module(package)
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert (inspect.getdoc(obj) or "").strip(), f"{package}.{name} has no docstring"
        # Its entry (under the package or the module that defines it) and a description after it.
        match = re.search(rf'id="[\w.]*\.{re.escape(name)}".*?<dd>(.*?)</dd>', api, flags=re.DOTALL)
        assert match, f"{package}.{name} is not on the API page"
        text = html.unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip()
        assert len(text) > 10, f"{package}.{name} has no description on the API page"
