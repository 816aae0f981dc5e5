"""Sphinx configuration of the cpc-rl docs: Markdown pages (MyST), API pages from the docstrings."""

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYGLET_HEADLESS", "true")

import cpc_rl  # noqa: E402

project = "cpc-rl"
author = "the cpc-rl developers"
release = version = cpc_rl.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.intersphinx", "sphinxarg.ext"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# study_notes.md is the hand-written part of rl_study.md, which includes it.
exclude_patterns = ["_build", "tuning/**", "results/study_notes.md"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# The API pages document cpc-rl's own code; their base classes live in SB3 and torch.
nitpicky = False
# sphinx-argparse's domain lacks the any-reference lookup MyST asks every domain for; links that do
# not resolve still fail the build (myst.xref_missing).
suppress_warnings = ["myst.domains"]
html_theme = "furo"
html_title = f"cpc-rl {release}"
intersphinx_mapping = {}

# The studies' reports live beside their runs in results/, outside the docs: a page links them as
# on GitHub (a relative path to the .md), and the site serves such a report as a file to download.
_RELATIVE_MD_LINK = re.compile(r"\]\(((?:\.\./)+[^)\s:]+\.md)\)")


def _link_reports_as_files(app, docname: str, source: list[str]) -> None:
    docs = Path(app.srcdir).resolve()
    folder = (docs / docname).parent

    def rewrite(match: re.Match) -> str:
        target = (folder / match.group(1)).resolve()
        return match.group(0) if target.is_relative_to(docs) else f"](path:{match.group(1)})"

    source[0] = _RELATIVE_MD_LINK.sub(rewrite, source[0])


def setup(app) -> None:
    app.connect("source-read", _link_reports_as_files)
