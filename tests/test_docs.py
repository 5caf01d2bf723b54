"""The documentation: the site builds strictly, the README stays a front door, and the evidence pages match the JSON.

- ``mkdocs build --strict`` (the running interpreter's mkdocs) succeeds: no broken link, no missing page, no
  unresolved cross-reference, the API reference generated for both packages;
- the README is at most ``README_MAX_LINES`` lines and shows the two commands exactly as ``.ci/run`` runs them;
- ``benchmarks/report.py --check`` passes (docs/learning.md and the README's headline block are what the JSON in
  docs/assets/ gives), and its builders are right on tiny hand-made results.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report():
    sys.path.insert(0, str(REPO / "benchmarks"))
    return _load("report", REPO / "benchmarks" / "report.py")


@pytest.fixture(scope="module")
def sections(report):
    return sys.modules["report_sections"]  # the builders, imported by report.py


# --- the site ----------------------------------------------------------------------------------------------------------
def test_site_builds_strictly_with_the_api_reference(tmp_path):
    pytest.importorskip("mkdocs", reason="the [docs] extra (scripts/install.sh installs it)")
    site = tmp_path / "site"
    env = os.environ | {"DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                           "-d", str(site)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    for page in ("index.html", "learning/index.html", "record/index.html", "assets/ablation.png"):
        assert (site / page).is_file(), page
    # one reference page per public module of each package, private ones left out
    for package in ("virl_data", "virl_train"):
        assert (site / "reference" / package / "index.html").is_file()
        modules = [p.relative_to(REPO / package).with_suffix("") for p in (REPO / package).rglob("*.py")
                   if not any(part.startswith("_") for part in p.relative_to(REPO).parts)]
        assert len(modules) > 10
        missing = [m for m in modules if not (site / "reference" / package / m / "index.html").is_file()]
        assert not missing, sorted(map(str, missing))
    assert not (site / "reference" / "virl_data" / "miners" / "_common").exists()
    html = (site / "reference" / "virl_data" / "core" / "boxes" / "index.html").read_text()
    assert "iou_matrix" in html and "&gt;&gt;&gt;" in html  # documented members and the doctest shown as code


def test_doctest_examples_are_fenced_for_markdown():
    ext = _load("griffe_doctest", REPO / "docs" / "griffe_doctest.py")
    text = 'Example:\n    >>> x = {"a": [1]}\n    >>> x["a"][0]\n    1\n\nAfter.'
    assert ext.fence_doctests(text).splitlines() == [
        "Example:", "    ```pycon", '    >>> x = {"a": [1]}', '    >>> x["a"][0]', "    1", "    ```", "", "After."]
    code = "Usage:\n\nSome prose.\n\n    >>> 1\n    1"  # already an indented code block under prose: unchanged
    assert ext.fence_doctests(code) == code


# --- the README --------------------------------------------------------------------------------------------------------
def _ci_commands() -> list[str]:
    """The commands ``.ci/run`` runs (its lines that are neither comments nor shell set-up)."""
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    setup = ("set ", "cd ", "export ")
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith(("#", *setup))]


def test_readme_is_a_front_door_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    install, tests = _ci_commands()
    assert install == "bash scripts/install.sh" and tests == "python3 -m pytest -q"
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    assert f"{install} && virl-data demo --out virl_demo --overwrite\n" in blocks
    assert f"{tests}\n" in blocks
    assert readme.index(install) < readme.index("## The flow")  # the two commands come first
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / link).is_file(), link


# --- benchmarks/report.py ----------------------------------------------------------------------------------------------
def test_generated_pages_match_their_json(report, capsys):
    assert report.main(["--check"]) == 0, capsys.readouterr().out[-4000:]


def _sight(crop: float, const: float, hit: float, acc: float) -> dict:
    return {"pixels": {"crop_iou": crop, "hit_rate@0.5": hit, "accuracy": acc},
            "constant": {"crop_iou": const, "hit_rate@0.5": 0.1, "accuracy": 0.2}}  # fmt: skip


def test_sanity_column_on_a_tiny_result(sections):
    curve = [0.5] * 10 + [0.6] * 80 + [0.7] * 10
    tiny = {"window": 10, "rise": 0.2, "passes": True, "goal": 0.1, "wall_s": 90.0,
            "sft": {"sight": _sight(0.6, 0.2, 0.55, 0.9)},
            "rl": {"sight_after": _sight(0.8, 0.25, 0.75, 0.85),
                   "curves": {"diag/crop_iou": curve, "diag/kl_start": [0.0] * 99 + [0.125],
                              "diag/zero_spread_frac": [0.5, 0.25], "grad_norm": [1.0, 2.0]}}}  # fmt: skip
    assert sections.sanity_column(tiny) == [
        "0.600 / 0.200 (0.550)",
        "0.500 → 0.700: rise **+0.200** (goal ≥ 0.1: **pass**)",
        "0.800 / 0.250 (0.750)",
        "0.125; 0.38; 1.50",
        "1.5 min",
    ]


def test_decoy_share_table_sorts_pilots_and_runs(sections):
    def result(decoys: float, outcome: list[float], full: list[float]) -> dict:
        metric = lambda v: {"mean": sum(v) / len(v), "std": 0.01, "per_seed": v}  # noqa: E731
        return {"sft_decoys": decoys, "seeds": [0, 1], "sft": {"sight": _sight(0.7, 0.2, 0.7, 0.9),
                "metrics": {"accuracy": 0.98}}, "variants": {"outcome": {"metrics": {"rationale": metric(outcome)}},
                                                             "full": {"metrics": {"rationale": metric(full)}}}}  # fmt: skip

    pilots = {"note": "pilots", "command": "learning.py --sft-decoys S", "pilots": [{"decoys": 0.5, "hit": 0.5, "accuracy": 0.9, "outcome": 0.6, "full": 0.9},
                                           {"decoys": 0.3, "hit": 0.9, "accuracy": 1.0, "outcome": None, "full": None}]}
    text = sections.decoy_share_section({"decoy_share_pilots": pilots, "ablation": result(0.4, [0.8, 0.8], [0.9, 0.9]),
                                       "ablation_replicate": result(0.45, [0.7, 0.9], [0.95, 0.95])})  # fmt: skip
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "share" not in ln]
    assert rows == [
        "| 0.3 (1 seed, pilot) | 0.900 | 1.000 | (not run: no room) |  |  |",
        "| **0.4** (2 seeds, `ablation.json`) | 0.700 | 0.980 | 0.800 ± 0.010 | 0.900 ± 0.010 | +0.100 |",
        "| **0.45** (2 seeds, `ablation_replicate.json`) | 0.700 | 0.980 | 0.800 ± 0.010 | 0.950 ± 0.010 | +0.150 |",
        "| 0.5 (1 seed, pilot) | 0.500 | 0.900 | 0.600 | 0.900 | +0.300 |",
    ]


def test_absent_json_leaves_a_note_and_a_stale_page_fails_the_check(report, tmp_path, capsys):
    assets, root = tmp_path / "assets", tmp_path / "repo"
    assets.mkdir()
    (assets / "tiny.json").write_text(json.dumps({"n": 3}))
    sections = [report.Section("Present", ("tiny",), "make tiny", lambda r: f"n = {r['tiny']['n']}"),
                report.Section("Later", ("credit",), "python benchmarks/credit.py", lambda r: "never built")]
    page = report.render("# Page", sections, assets)
    assert "## Present\n\nn = 3" in page and "never built" not in page
    assert "`docs/assets/credit.json` absent: `python benchmarks/credit.py` writes it." in page

    block = report.Block("headline", ("tiny",), lambda r: f"- {r['tiny']['n']} things")
    text = "intro\n<!-- report:headline (generated) -->\n- old\n<!-- /report:headline -->\nend\n"
    assert report.fill_blocks(text, [block], assets, "x.md") == \
        "intro\n<!-- report:headline (generated) -->\n- 3 things\n<!-- /report:headline -->\nend\n"  # fmt: skip
    with pytest.raises(ValueError, match="markers"):
        report.fill_blocks("no markers", [block], assets, "x.md")

    # --check against a root whose pages are stale: non-zero, and a diff is printed
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "learning.md").write_text("# hand-edited\n")
    for rel in report.BLOCKS:  # the hand-written pages with generated blocks, as committed
        (root / rel).write_text((REPO / rel).read_text())
    assert report.main(["--check", "--root", str(root)]) == 1
    assert "+# The learning evidence" in capsys.readouterr().out


def test_reflow_wraps_prose_and_bullets_but_not_tables(report):
    text = "a b\nc " + "word " * 30 + "\n\n| x |\n|---|\n| 1 |\n\n- item one\n  more\n- item " + "two " * 30
    out = report.reflow(text, width=40).split("\n\n")
    assert out[0].startswith("a b c word") and max(len(ln) for ln in out[0].splitlines()) <= 40
    assert out[1] == "| x |\n|---|\n| 1 |"
    bullets = out[2].splitlines()
    assert bullets[0] == "- item one more" and bullets[1].startswith("- item two")
    assert all(ln.startswith("  ") for ln in bullets[2:])
