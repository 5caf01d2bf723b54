"""virl_data: mine, verify, curate, review and export visual rationale records.

The packages follow the flow, each importing only those below it (import-linter contracts in ``pyproject.toml``)::

    cli/           the ``virl-data`` command line: one module per command group
    integrations/  FiftyOne, Label Studio (push a corpus, pull reviews)  |  engines/  local and Ray pipelines
    export/        HF, Parquet, JSONL, COCO, TRL and verl exports (records as reviewers corrected them)
    review/        merge reviews, rank the review queue, diff, corrupt
    curation/      checks (accept / reject with reasons), curate (stats, filter, dedup, split)
    miners/        one module per source dataset                         |  storage/  corpus files, trajectory logs
    core/          the record types, schema, boxes, box conventions, answers, errors

Only the core types are re-exported here; integrations (FiftyOne, Label Studio) and heavy libraries are imported
inside the functions that need them, so ``import virl_data`` stays fast and offline.
"""

from virl_data.core.errors import VirlError
from virl_data.core.types import (
    SCHEMA_VERSION,
    Box,
    CheckResult,
    ImageRef,
    Provenance,
    RationaleRecord,
    RationaleStep,
    Review,
    Status,
    record_id,
)

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "Box",
    "CheckResult",
    "ImageRef",
    "Provenance",
    "RationaleRecord",
    "RationaleStep",
    "Review",
    "Status",
    "VirlError",
    "record_id",
]
