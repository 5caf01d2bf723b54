"""End-to-end runs of the data flow. ``run_demo`` chains every stage on the embedded shapes world:

    generate (shapes) → verify (checks) → stats (curate) → split (curate) → export (HF dataset folder)

and writes each stage's output under one folder, so a newcomer can see the whole flow in under a minute:

    DIR/images/shapes/seed*/*.png    rendered scenes (DIR/images is the image root)
    DIR/corpus/mined.parquet         the mined records
    DIR/corpus/verified.parquet      every record, accepted or rejected with reasons
    DIR/corpus/split.parquet         accepted records with train/val/test assigned (grouped by image)
    DIR/reports/stats.json, .png     statistics and their plot
    DIR/export/hf/                   an HF DatasetDict (``datasets.load_from_disk``), images embedded
    DIR/virl_demo.json               the marker: what the demo wrote (``--overwrite`` clears exactly that)

A non-empty DIR is refused unless ``overwrite``, which removes what a previous demo wrote there (the entries above)
and nothing else; a non-empty folder without the marker is never cleared (``prepare_demo_dir``).

``run_pipeline`` runs a declarative pipeline (``pipelines/*.yaml``, loaded by ``load_pipeline`` into a frozen
``PipelineConfig``) on any miner:

    mine → corpus/mined.parquet → verify → corpus/verified.parquet → filters → dedup → split
         → corpus/curated.parquet → export/<format>/ per export → report.json

Curation works on the records that passed verification; the rejected ones stay in ``verified.parquet`` with their
reasons. Counts in = counts out at every stage (``n_in = n_out + sum(removed)``), checked before the report is
written. A pipeline YAML (relative source paths resolve against the YAML's folder; ``out`` against the working
directory; unknown keys are errors naming the nearest valid key):

    name: gqa
    source:
      miner: gqa                       # a key of virl_data.miners.MINERS
      options:                         # the miner's own keyword arguments (checked against its signature)
        questions: ../../shared/data/gqa/train_domiknows_sample/train_balanced_questions_sample.json
        scene_graphs: ../../shared/data/gqa/train_domiknows_sample/train_sceneGraphs_sample.json
      images: null                     # image root; a rendering miner (shapes) writes here, relative to ``out``
      limit: null
    verify: {max_steps: 8}             # checks.CheckConfig fields
    filters: ["pl.col('n_steps') >= 1"]  # polars expressions selecting the records to keep
    dedup: true
    split: {ratios: {train: 0.8, val: 0.1, test: 0.1}, seed: 0}
    export: [{format: parquet}, {format: coco, out: export/coco_json}]   # ``out`` relative to the run folder
    out: runs/gqa
    intermediate: [mined, verified]    # corpora written besides curated (default: both locally, none under Ray)
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from rich.console import Console
from rich.table import Table

from virl_data import export as export_mod
from virl_data.core import schema
from virl_data.core.errors import ConfigError, EmptyInputError, OutputExistsError
from virl_data.curation import checks, curate
from virl_data.miners import MINERS
from virl_data.miners.shapes import ShapesConfig, generate
from virl_data.storage import corpus
from virl_data.storage.locks import folder_lock, is_lock_file
from virl_data.storage.paths import refuse_clashes

DEMO_MARKER = "virl_demo.json"
DEMO_ENTRIES = ("images", "corpus", "reports", "export")
"""What ``run_demo`` writes under its folder, besides ``DEMO_MARKER``."""


def check_demo_dir(out: str | Path, *, overwrite: bool = False) -> bool:
    """Whether ``out`` holds a previous demo to clear (``overwrite``); False for a missing or empty folder (its lock
    file aside). ``OutputExistsError`` for a file, a non-empty folder that is not a demo's, or a demo's without
    ``overwrite``. Changes nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file, not a folder; choose another --out")
    if not out.is_dir() or all(is_lock_file(p) for p in out.iterdir()):  # the demo's own lock does not count
        return False
    if not (out / DEMO_MARKER).is_file():
        raise OutputExistsError(f"{out} is not empty and is not a virl demo output (no {DEMO_MARKER}): refusing to "
                                "clear it; choose another --out")
    if not overwrite:
        raise OutputExistsError(f"{out} already holds a virl demo; pass --overwrite to replace it (only what the "
                                "demo wrote there is removed), or choose another --out")
    return True


def prepare_demo_dir(out: str | Path, *, overwrite: bool = False) -> Path:
    """Make ``out`` ready for a demo: a missing or empty folder is used as is; a non-empty one raises
    ``OutputExistsError`` unless ``overwrite``, which removes what a previous demo wrote there (``DEMO_ENTRIES`` and
    the marker ``DEMO_MARKER``) and leaves anything else alone. A non-empty folder without the marker is never
    cleared.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "notes.txt").write_text("mine")
    >>> prepare_demo_dir(d, overwrite=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    virl_data.core.errors.OutputExistsError: ... is not empty and is not a virl demo output (no virl_demo.json): ...
    """
    out = Path(out)
    if not check_demo_dir(out, overwrite=overwrite):
        return out
    for name in (*DEMO_ENTRIES, DEMO_MARKER):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    return out


def run_demo(
    out: str | Path,
    *,
    n: int = 400,
    seed: int = 0,
    image_size: int = 224,
    console: Console | None = None,
    config: ShapesConfig | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Run generate → verify → stats → split → export on ``n`` shapes records under ``out``; return the paths.
    ``config`` replaces the default world (square ``image_size`` images) when given. A non-empty ``out`` is refused
    unless ``overwrite`` and it holds a previous demo (``prepare_demo_dir``); a folder another process is writing
    (``locks.folder_lock``) is refused with ``FolderBusyError``."""
    console = console or Console()
    config = config or ShapesConfig(image_size=(image_size, image_size))
    check_demo_dir(out, overwrite=overwrite)  # refused before the lock: not even a lock file in a folder not ours
    with folder_lock(out):
        return _demo(prepare_demo_dir(out, overwrite=overwrite), n, seed, console, config)


def _demo(out: Path, n: int, seed: int, console: Console, config: ShapesConfig) -> dict[str, Path]:
    """``run_demo``'s stages, once it holds ``out``."""
    images = out / "images"
    # the marker first: a demo that stops halfway is still recognised (and cleared) by the next --overwrite
    corpus.write_json({"virl_demo": {"n": n, "seed": seed, "world": dataclasses.asdict(config),
                                     "wrote": list(DEMO_ENTRIES)}}, out / DEMO_MARKER)

    records = list(generate(n, seed=seed, image_dir=images, config=config, progress=True))
    mined = corpus.write(records, out / "corpus" / "mined.parquet", image_root=images)

    verified_df = checks.verify(corpus.read(mined), checks.CheckConfig(), image_root=images, progress=True)
    verified = corpus.write(verified_df, out / "corpus" / "verified.parquet", image_root=images)

    stats = curate.stats(verified_df)
    curate.render_stats(stats, console)
    stats_json = corpus.write_json(curate.stats_to_dict(stats), out / "reports" / "stats.json")
    stats_png = out / "reports" / "stats.png"
    curate.plot_stats(stats, stats_png)

    split_df = curate.split(verified_df, seed=seed).collect()
    split = corpus.write(split_df, out / "corpus" / "split.parquet", image_root=images)

    hf_dir = out / "export" / "hf"
    result = export_mod.export(split_df, hf_dir, "hf", image_root=images, progress=True)
    console.print(export_mod.summary_table(result))
    return {
        "images": images,
        "mined corpus": mined,
        "verified corpus": verified,
        "split corpus": split,
        "stats report": stats_json,
        "stats plot": stats_png,
        "HF export": hf_dir,
    }


# --- declarative pipelines: config -----------------------------------------------------------------------------------
PASSED_STATUSES: tuple[str, ...] = ("accepted", "reviewed")
"""Statuses that leave ``verify`` into curation; ``rejected`` records stay behind in ``verified.parquet``."""
_SOURCE_RUN_KEYS = ("images", "limit")  # miner parameters set by source.images / source.limit, not by options


@dataclass(frozen=True)
class SourceConfig:
    """Which miner to run and on what: ``options`` are its keyword arguments (file paths and knobs), ``images`` the
    image root (read for sizes and checks; a rendering miner such as ``shapes`` writes its images there)."""

    miner: str
    options: dict[str, Any] = field(default_factory=dict)
    images: str | None = None
    limit: int | None = None


@dataclass(frozen=True)
class SplitConfig:
    """``curate.split`` arguments: fractions per split name (summing to 1) and the seed."""

    ratios: dict[str, float] = field(default_factory=lambda: dict(curate.DEFAULT_RATIOS))
    seed: int = 0


@dataclass(frozen=True)
class ExportConfig:
    """One export: ``format`` in ``export.FORMATS``; ``out`` relative to the run folder (default ``export/<format>``)."""

    format: str
    out: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    """A whole pipeline. ``verify`` holds ``checks.CheckConfig`` fields; ``filters`` polars expressions (see
    ``curate.filter_expr``) applied in order; ``split=None`` leaves the split unset (exports go to split ``all``).

    >>> cfg = PipelineConfig("demo", SourceConfig("shapes", {"seed": 1}, limit=10), export=(ExportConfig("jsonl"),))
    >>> cfg.check_config().max_steps, cfg.out
    (8, 'runs/demo')
    """

    name: str
    source: SourceConfig
    verify: dict[str, Any] = field(default_factory=dict)
    filters: tuple[str, ...] = ()
    dedup: bool = True
    split: SplitConfig | None = field(default_factory=SplitConfig)
    export: tuple[ExportConfig, ...] = ()
    out: str = ""
    intermediate: tuple[str, ...] | None = None  # corpora written besides curated; None: the engine's default

    def __post_init__(self) -> None:
        if not self.out:
            object.__setattr__(self, "out", f"runs/{self.name}")

    def check_config(self) -> checks.CheckConfig:
        return _check_config(self.verify, "verify")


def _keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def check_keys(data: Mapping[str, Any], valid: Sequence[str], where: str, required: Sequence[str] = ()) -> None:
    """``ConfigError`` for a key of ``data`` not in ``valid`` (naming the nearest valid one) or a missing required key.

    >>> check_keys({"filtres": []}, ["filters", "dedup"], "pipeline")
    Traceback (most recent call last):
    ...
    virl_data.core.errors.ConfigError: pipeline: unknown key 'filtres'; did you mean 'filters'? (valid: filters, dedup)
    """
    for key in data:
        if key not in valid:
            near = difflib.get_close_matches(str(key), list(valid), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint} (valid: {', '.join(valid) or 'none'})")
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(value).__name__}")
    return value


def _typed(value: Any, types: type | tuple[type, ...], where: str, what: str) -> Any:
    types = types if isinstance(types, tuple) else (types,)
    # bool is an int in Python, but a YAML `limit: yes` is still a mistake
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    return value


def _check_config(verify: Mapping[str, Any], where: str) -> checks.CheckConfig:
    check_keys(verify, _keys(checks.CheckConfig), where)
    try:
        return checks.CheckConfig(**verify)
    except TypeError as exc:  # e.g. a string where a number belongs
        raise ConfigError(f"{where}: {exc}") from None


def miner_parameters(miner: str) -> dict[str, inspect.Parameter]:
    """The options a miner takes: its keyword-only parameters other than ``images`` and ``limit``."""
    if miner not in MINERS:
        near = difflib.get_close_matches(miner, list(MINERS), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"source.miner: unknown miner {miner!r}{hint} (miners: {', '.join(MINERS)})")
    params = inspect.signature(MINERS[miner]).parameters.values()
    return {p.name: p for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _SOURCE_RUN_KEYS}


def renders_images(miner: str) -> bool:
    """A miner whose first parameter is positional (``shapes.mine(src_dir, ...)``) renders its images there."""
    params = inspect.signature(MINERS[miner]).parameters.values()
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _is_path_param(p: inspect.Parameter) -> bool:
    return "Path" in str(p.annotation)  # annotations are strings here (PEP 563): "Path", "Path | None"


def _resolve(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _source(data: Any, base: Path) -> SourceConfig:
    data = _mapping(data, "source")
    check_keys(data, _keys(SourceConfig), "source", required=["miner"])
    miner = _typed(data["miner"], str, "source.miner", "a miner name")
    params = miner_parameters(miner)
    options = dict(_mapping(data.get("options"), "source.options"))
    for key in options:
        if key in _SOURCE_RUN_KEYS:
            raise ConfigError(f"source.options: {key!r} is not a miner option here; set source.{key} instead")
    check_keys(options, list(params), f"source.options (miner {miner})")
    missing = [n for n, p in params.items() if p.default is p.empty and n not in options]
    if missing:
        raise ConfigError(f"source.options: miner {miner} needs {missing[0]!r} (options: {', '.join(params)})")
    for key, value in options.items():
        if _is_path_param(params[key]) and value is not None:
            options[key] = _resolve(_typed(value, str, f"source.options.{key}", "a path"), base)
    images = data.get("images")
    if images is not None:
        _typed(images, str, "source.images", "a folder path")
        images = images if renders_images(miner) else _resolve(images, base)  # rendered images live under out
    limit = data.get("limit")
    if limit is not None and _typed(limit, int, "source.limit", "a whole number") < 0:
        raise ConfigError(f"source.limit must be >= 0, got {limit}")
    return SourceConfig(miner=miner, options=options, images=images, limit=limit)


def _split(data: Any) -> SplitConfig | None:
    if data is None or data is False:
        return None
    data = {} if data is True else _mapping(data, "split")
    check_keys(data, _keys(SplitConfig), "split")
    ratios = data.get("ratios")
    ratios = curate.check_ratios(_mapping(ratios, "split.ratios")) if ratios is not None else dict(curate.DEFAULT_RATIOS)
    return SplitConfig(ratios=ratios, seed=_typed(data.get("seed", 0), int, "split.seed", "a whole number"))


def _exports(data: Any) -> tuple[ExportConfig, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(f"export: expected a list of {{format, out}} entries, got {type(data).__name__}")
    out: list[ExportConfig] = []
    for i, item in enumerate(data):
        item = _mapping(item, f"export[{i}]")
        check_keys(item, _keys(ExportConfig), f"export[{i}]", required=["format"])
        fmt = _typed(item["format"], str, f"export[{i}].format", "a format name")
        if fmt not in export_mod.FORMATS:
            raise ConfigError(f"export[{i}].format: unknown format {fmt!r} (formats: {', '.join(export_mod.FORMATS)})")
        target = item.get("out")
        out.append(ExportConfig(fmt, None if target is None else _typed(target, str, f"export[{i}].out", "a path")))
    targets = [_export_dir(Path("."), e) for e in out]
    if len(set(targets)) != len(targets):
        raise ConfigError("export: two exports write the same folder; give one of them its own 'out'")
    return tuple(out)


INTERMEDIATE = ("mined", "verified")
"""The corpora a run can write besides ``curated`` (YAML ``intermediate: [mined, verified]``)."""


def _intermediate(data: Any, where: str = "intermediate") -> tuple[str, ...] | None:
    if data is None:
        return None
    names = [data] if isinstance(data, str) else data
    if not isinstance(names, list | tuple) or any(n not in INTERMEDIATE for n in names):
        raise ConfigError(f"{where}: expected a list of {', '.join(INTERMEDIATE)}, got {data!r}")
    return tuple(n for n in INTERMEDIATE if n in names)


def intermediate_corpora(cfg: PipelineConfig, override: Sequence[str] | None,
                         default: Sequence[str]) -> tuple[str, ...]:
    """Which intermediate corpora a run writes: ``override`` (a flag) if given, else the YAML's, else ``default``
    (the local engine: both; the Ray engine: none, a full extra copy of the corpus each)."""
    chosen = _intermediate(list(override), "--intermediate") if override is not None else cfg.intermediate
    return tuple(default) if chosen is None else chosen


def _filters(data: Any) -> tuple[str, ...]:
    if data is None:
        return ()
    if isinstance(data, str) or not isinstance(data, list):
        raise ConfigError("filters: expected a list of polars expressions (strings)")
    for i, expr in enumerate(data):
        curate.filter_expr(_typed(expr, str, f"filters[{i}]", "a polars expression string"))
    return tuple(data)


def pipeline_from_dict(data: Any, base_dir: str | Path = ".", default_name: str = "pipeline") -> PipelineConfig:
    """Validate a pipeline mapping (as parsed from YAML) into a ``PipelineConfig``; source paths resolve against
    ``base_dir``. Raises ``ConfigError`` naming the offending key (and the nearest valid one)."""
    data = _mapping(data, "pipeline")
    check_keys(data, _keys(PipelineConfig), "pipeline", required=["source"])
    name = _typed(data.get("name", default_name), str, "name", "a string")
    _check_config(_mapping(data.get("verify"), "verify"), "verify")
    return PipelineConfig(
        name=name,
        source=_source(data["source"], Path(base_dir)),
        verify=dict(_mapping(data.get("verify"), "verify")),
        filters=_filters(data.get("filters")),
        dedup=_typed(data.get("dedup", True), bool, "dedup", "true or false"),
        split=_split(data.get("split", {})),
        export=_exports(data.get("export")),
        out=_typed(data.get("out") or f"runs/{name}", str, "out", "a folder path"),
        intermediate=_intermediate(data.get("intermediate")),
    )


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline YAML (``yaml.safe_load``); errors are ``ConfigError`` starting with the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pipeline ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    try:
        return pipeline_from_dict(data, path.resolve().parent, default_name=path.stem)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# --- declarative pipelines: run --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageReport:
    """One stage's accounting: ``n_in = n_out + sum(removed.values())``; ``removed`` counts per reason."""

    name: str
    n_in: int
    n_out: int
    removed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    detail: str = ""

    @property
    def n_removed(self) -> int:
        return sum(self.removed.values())


@dataclass(frozen=True)
class RunReport:
    """What ``run_pipeline`` did: the stages in order (exports last, each fed the curated corpus), the rejection
    reasons of the verified corpus (``check, reason_code, count`` rows), the resolved config and the files written."""

    name: str
    out: Path
    stages: tuple[StageReport, ...]
    rejection_reasons: tuple[dict[str, Any], ...]
    config: dict[str, Any]
    paths: dict[str, Path]
    seconds: float

    @property
    def report_path(self) -> Path:
        return self.out / "report.json"

    def stage(self, name: str) -> StageReport:
        return next(s for s in self.stages if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "out": str(self.out),
            "seconds": round(self.seconds, 3),
            "stages": [{**dataclasses.asdict(s), "n_removed": s.n_removed, "seconds": round(s.seconds, 3)}
                       for s in self.stages],
            "rejection_reasons": list(self.rejection_reasons),
            "paths": {k: str(v) for k, v in self.paths.items()},
            "config": self.config,
        }


def _export_dir(out: Path, e: ExportConfig) -> Path:
    return out / (e.out if e.out is not None else f"export/{e.format}")


def check_run_paths(cfg: PipelineConfig, out: str | Path | None = None, yaml_path: str | Path | None = None) -> None:
    """Refuse a run whose outputs (``OUT/corpus/*.parquet``, ``OUT/report.json``, each export folder, replaced
    whole) would overwrite its inputs (the YAML, the miner's files, the image folder) or each other
    (``paths.refuse_clashes``); called before anything is mined."""
    out = Path(out if out is not None else cfg.out)
    inputs: dict[str, Path | None] = {"PIPELINE": None if yaml_path is None else Path(yaml_path)}
    for key, value in cfg.source.options.items():
        if isinstance(value, (str, Path)) and _is_path_param(miner_parameters(cfg.source.miner)[key]):
            inputs[f"source.options.{key}"] = Path(value)
    if not renders_images(cfg.source.miner) and cfg.source.images is not None:
        inputs["source.images"] = Path(cfg.source.images)
    outputs: dict[str, Path | None] = {f"{out}/corpus/{f}.parquet": out / "corpus" / f"{f}.parquet"
                                       for f in ("mined", "verified", "curated")}
    outputs["report.json"] = out / "report.json"
    replaced = {f"export {e.format} folder": _export_dir(out, e) for e in cfg.export}
    refuse_clashes(inputs=inputs, outputs=outputs, replaced=replaced)


def _image_root(cfg: PipelineConfig, out: Path) -> Path | None:
    if renders_images(cfg.source.miner):
        return out / (cfg.source.images or "images")  # absolute stays absolute: Path / abs = abs
    return None if cfg.source.images is None else Path(cfg.source.images)


def _mine(source: SourceConfig, images: Path | None) -> pl.DataFrame:
    miner = MINERS[source.miner]
    if renders_images(source.miner):
        records = miner(images, limit=source.limit, **source.options)
    else:
        options = {k: Path(v) if _is_path_param(miner_parameters(source.miner)[k]) and v is not None else v
                   for k, v in source.options.items()}
        records = miner(**options, images=images, limit=source.limit)
    frame = schema.records_to_frame(records)
    if frame.height == 0 and source.limit != 0:  # limit 0 asks for nothing; otherwise an empty source is a mistake
        raise EmptyInputError(f"source: the {source.miner} miner found no records in {source.options}")
    return frame


class _Clock:
    """``lap()``: seconds since the previous lap (or since construction)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed


def _verify(mined: pl.DataFrame, cfg: PipelineConfig, images: Path | None) -> tuple[pl.DataFrame, StageReport]:
    verified = checks.verify(mined, cfg.check_config(), image_root=images)
    counts = dict(verified.group_by("status").len().iter_rows())
    passed = sum(counts.get(s, 0) for s in PASSED_STATUSES)
    skipped = checks.skipped_notes(checks.skipped_checks(verified))
    return verified, StageReport("verify", mined.height, passed, {"rejected": counts.get("rejected", 0)},
                                 detail=", ".join([*(f"{s}: {n}" for s, n in sorted(counts.items())), *skipped]))


def _filter(frame: pl.DataFrame, filters: Sequence[str]) -> tuple[pl.DataFrame, StageReport]:
    n_in, removed = frame.height, {}
    for expr in filters:
        result = curate.filter_report(frame, expr)
        removed[expr] = removed.get(expr, 0) + result.n_removed
        frame = result.kept
    return frame, StageReport("filter", n_in, frame.height, removed, detail=f"{len(filters)} expressions")


def _dedup(frame: pl.DataFrame, images: Path | None) -> tuple[pl.DataFrame, StageReport]:
    result = curate.dedup(frame, image_root=images)
    kept = result.kept.collect()
    return kept, StageReport("dedup", frame.height, kept.height, {"duplicate": result.n_removed},
                             detail="; ".join(result.notes))


def _split_stage(frame: pl.DataFrame, split: SplitConfig) -> tuple[pl.DataFrame, StageReport]:
    assigned = curate.split(frame, split.ratios, seed=split.seed).collect()
    counts = dict(assigned.group_by("split").len().iter_rows())
    detail = ", ".join(f"{k}: {counts.get(k, 0)}" for k in split.ratios)
    return assigned, StageReport("split", frame.height, assigned.height, detail=f"seed {split.seed}; {detail}")


def _export(frame: pl.DataFrame, e: ExportConfig, target: Path, images: Path | None) -> StageReport:
    name = f"export:{e.format}"
    if frame.height == 0:  # export refuses an empty selection; an empty curated corpus is a result, not an error
        return StageReport(name, 0, 0, detail="skipped: no records left to export")
    result = export_mod.export(frame, target, e.format, image_root=images)
    splits = ", ".join(f"{k}: {n}" for k, n in result.counts.items())
    return StageReport(name, frame.height, result.n_exported, dict(result.excluded), detail=f"{target} ({splits})")


def check_accounting(stages: Sequence[StageReport]) -> None:
    """Raise ``AssertionError`` unless every stage has ``n_in = n_out + removed`` and each stage takes what the one
    before it gave (exports all take the curated corpus). A failure is a bug in virl, not a user error."""
    chain = [s for s in stages if not s.name.startswith("export:")]
    for s in stages:
        if s.n_in != s.n_out + s.n_removed or min(s.n_in, s.n_out, *s.removed.values(), 0) < 0:
            raise AssertionError(f"stage {s.name}: {s.n_in} in != {s.n_out} out + {s.removed} removed")
    for before, after in zip(chain, chain[1:], strict=False):
        if after.n_in != before.n_out:
            raise AssertionError(f"stage {after.name} took {after.n_in} records, {before.name} gave {before.n_out}")
    for s in stages:
        if s.name.startswith("export:") and s.n_in != chain[-1].n_out:
            raise AssertionError(f"stage {s.name} took {s.n_in} records, the curated corpus has {chain[-1].n_out}")


def run_pipeline(
    config: PipelineConfig | str | Path, out: str | Path | None = None, console: Console | None = None,
    intermediate: Sequence[str] | None = None,
) -> RunReport:
    """Run ``config`` (a ``PipelineConfig`` or a YAML path) under ``out`` (default ``config.out``); see the module
    docstring for the files. Every stage's counts are checked (``check_accounting``) before ``report.json`` is
    written. Each stage prints one line on ``console`` when given."""
    cfg = config if isinstance(config, PipelineConfig) else load_pipeline(config)
    check_run_paths(cfg, out, None if isinstance(config, PipelineConfig) else config)
    out = Path(out if out is not None else cfg.out)
    images, clock, started = _image_root(cfg, out), _Clock(), time.perf_counter()
    stages: list[StageReport] = []
    paths: dict[str, Path] = {}
    written = intermediate_corpora(cfg, intermediate, default=INTERMEDIATE)

    def done(frame: pl.DataFrame, stage: StageReport, file: str | None = None) -> pl.DataFrame:
        stages.append(dataclasses.replace(stage, seconds=clock.lap()))
        if file is not None and file in written:
            paths[file] = corpus.write(frame, out / "corpus" / f"{file}.parquet", image_root=images)
        if console is not None:
            console.print(f"[bold]{stage.name}[/]: {stage.n_in} → {stage.n_out} {stage.detail}", highlight=False)
        return frame

    mined = _mine(cfg.source, images)
    n_mining = int((mined["status"] == "rejected").sum())
    done(mined, StageReport("mine", mined.height, mined.height, detail=f"{n_mining} rejected while mining"), "mined")
    verified, stage = _verify(mined, cfg, images)
    done(verified, stage, "verified")
    frame = verified.filter(pl.col("status").is_in(PASSED_STATUSES))
    if cfg.filters:
        frame = done(*_filter(frame, cfg.filters))
    if cfg.dedup:
        frame = done(*_dedup(frame, images))
    if cfg.split is not None:
        frame = done(*_split_stage(frame, cfg.split))
    paths["curated"] = corpus.write(frame, out / "corpus" / "curated.parquet", image_root=images)
    for e in cfg.export:
        paths[f"export:{e.format}"] = _export_dir(out, e)
        done(frame, _export(frame, e, _export_dir(out, e), images))
    check_accounting(stages)
    report = RunReport(
        name=cfg.name, out=out, stages=tuple(stages),
        rejection_reasons=tuple(checks.rejection_reasons(verified).iter_rows(named=True)),
        config={**dataclasses.asdict(cfg), "out": str(out), "image_root": None if images is None else str(images)},
        paths=paths, seconds=time.perf_counter() - started,
    )
    corpus.write_json(report.to_dict(), report.report_path)
    return report


def stages_table(report: RunReport) -> Table:
    """A ``rich`` table of a run: one row per stage (records in/out, removed per reason, seconds)."""
    table = Table(title=f"pipeline {report.name}: {report.stage('mine').n_out} records mined in {report.seconds:.1f}s")
    for col, justify in (("stage", "left"), ("in", "right"), ("out", "right"), ("removed", "left"),
                         ("seconds", "right"), ("detail", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in report.stages:
        removed = ", ".join(f"{k}: {n}" for k, n in s.removed.items() if n) or "-"
        table.add_row(s.name, str(s.n_in), str(s.n_out), removed, f"{s.seconds:.2f}", s.detail)
    return table


__all__ = [
    "INTERMEDIATE",
    "ExportConfig",
    "PipelineConfig",
    "RunReport",
    "SourceConfig",
    "SplitConfig",
    "StageReport",
    "check_accounting",
    "check_demo_dir",
    "check_keys",
    "intermediate_corpora",
    "load_pipeline",
    "miner_parameters",
    "pipeline_from_dict",
    "check_run_paths",
    "prepare_demo_dir",
    "renders_images",
    "run_demo",
    "run_pipeline",
    "stages_table",
]
