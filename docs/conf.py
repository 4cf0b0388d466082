"""Sphinx configuration: ``make docs`` builds the site offline, warnings as errors."""

from __future__ import annotations

project = "gunpy"
author = "the gunpy developers"
copyright = "2026, the gunpy developers"  # noqa: A001 - Sphinx's name

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
# contents.md holds the table of contents; index.md is the landing page inside it.
root_doc = "contents"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
html_theme = "alabaster"
html_static_path: list[str] = []
# Pages link to repository files (examples, tests) by relative path; those are not
# documents of the site.
suppress_warnings: list[str] = []
