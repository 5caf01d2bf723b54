"""A griffe extension for the API reference: show the docstrings' doctest examples as code.

virl's docstrings are prose with ``>>>`` examples (often under ``Example:``) and, in some module docstrings, command
usage lines indented under the summary. Markdown would read both as paragraphs, where ``x[0][1]`` or
``[--save-every K]`` look like reference links (broken ones, which ``mkdocs build --strict`` rejects). This extension,
run by mkdocstrings (``mkdocs.yml``: ``extensions``), changes only what the site shows, never the source:

- each run of doctest lines (``>>>``, its ``...`` continuations and its output up to a blank line) is fenced as a
  ``pycon`` code block, at the run's indentation;
- a module docstring keeps its own indentation (PEP 257 cleaning strips the indent shared by every line after the
  first, which turns an indented usage block of a module docstring into plain text); an indented block after a blank
  line then stays a Markdown code block.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

_SECTION = re.compile(r"^\s*[A-Z][A-Za-z ]{0,30}:\s*$")  # "Example:", "Examples:", "Note:" headers


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def fence_doctests(text: str) -> str:
    """Wrap every doctest run of ``text`` in a ```` ```pycon ```` fence, except runs that already are an indented
    code block (indented under a paragraph line that is not a section header).

    >>> fence_doctests("Example:\\n    >>> 1 + 1\\n    2").splitlines()
    ['Example:', '    ```pycon', '    >>> 1 + 1', '    2', '    ```']
    """
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = _indent(line)
        previous = next((p for p in reversed(out) if p.strip()), "")
        is_code_already = indent >= _indent(previous) + 4 and not _SECTION.match(previous) and previous != ""
        j = i + 1
        while j < len(lines) and lines[j].strip() and _indent(lines[j]) >= indent:
            j += 1
        block = lines[i:j]
        out += block if is_code_already else [" " * indent + "```pycon", *block, " " * indent + "```"]
        i = j
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence doctest examples and keep module docstrings' own indentation (see the module docstring)."""

    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        text = obj.docstring.value
        if obj.is_module and isinstance(node, ast.Module):
            raw = ast.get_docstring(node, clean=False)
            if raw:
                text = raw.strip("\n").rstrip()
        obj.docstring.value = fence_doctests(text)
