"""Generate the API reference pages at build time (the mkdocs-gen-files recipe).

Walks the packages of ``PACKAGES`` on disk and writes one page per public module, ``reference/<dotted/path>.md``,
holding a single ``::: dotted.module`` directive that mkdocstrings renders from the docstrings (statically, with
griffe: nothing is imported, so optional heavy dependencies need not be installed). A package's page is its
``__init__``. Private modules (any path part starting with ``_``, e.g. ``miners/_common.py``) and ``__main__`` are
left out. ``reference/SUMMARY.md`` is the navigation, read by mkdocs-literate-nav.

No module path is written anywhere by hand: a module that is moved, renamed or added shows up in the right place on
the next ``mkdocs build``.
"""

from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("virl_data", "virl_train")


def public_modules(root: Path, packages: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The dotted-name parts of every public module of ``packages`` under ``root``, packages before their modules,
    sorted, e.g. ``("virl_data",)``, ``("virl_data", "boxes")``."""
    found: list[tuple[str, ...]] = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if any(p.startswith("_") for p in parts):
                continue  # private modules, __main__, and anything under a private package
            if not all((root.joinpath(*parts[:i]) / "__init__.py").exists() for i in range(1, len(parts))):
                continue  # a script in a folder that is not a package
            found.append(parts)
    return sorted(found)


def main() -> None:
    nav = mkdocs_gen_files.Nav()
    for parts in public_modules(ROOT, PACKAGES):
        is_package = (ROOT.joinpath(*parts) / "__init__.py").exists()
        # a package's page is its section's index (mkdocs-section-index), a module's page its own file
        doc_path = Path(*parts, "index.md") if is_package else Path(*parts).with_suffix(".md")
        nav[parts] = doc_path.as_posix()
        with mkdocs_gen_files.open(Path("reference") / doc_path, "w") as fd:
            fd.write(f"::: {'.'.join(parts)}\n")
    with mkdocs_gen_files.open("reference/SUMMARY.md", "w") as nav_file:
        nav_file.writelines(nav.build_literate_nav())


main()
