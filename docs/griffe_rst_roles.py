"""Griffe extension for the docs site: render reST roles in docstrings as code spans.

The docstrings use Sphinx roles (``:class:`ProblemLog```); Markdown would print the role.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj):`~?([^`]+)`")


class RstRoles(griffe.Extension):
    """Rewrite ``:role:`name``` as a ``name`` code span before the docstring is rendered."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(r"``\1``", obj.docstring.value)
