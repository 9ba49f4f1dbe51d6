"""Sphinx configuration: Markdown pages (MyST) and the API reference from the docstrings.

Sphinx because the docstrings already use its roles (:func:, :class:, :math:) and Google-style sections
(read by napoleon); MyST so that pages are Markdown like the README. Built by ``make docs`` with warnings as
errors. The CLI, config and API reference pages are generated at build time (``_ext/foveal_reference.py``)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))

project = "foveal"
author = "the foveal developers"
copyright = "2026, the foveal developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "foveal_reference"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "ignore-module-all": True}  # each object where it is defined, once
autodoc_typehints = "description"
napoleon_google_docstring, napoleon_numpy_docstring = True, False
html_theme = "alabaster"
html_static_path = []
