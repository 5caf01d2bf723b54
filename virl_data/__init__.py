"""virl_data: mine, verify, curate, review and export visual rationale records.

Only the core types are re-exported here; integrations (FiftyOne, Label Studio) and heavy libraries are imported
inside the functions that need them, so ``import virl_data`` stays fast and offline.
"""

from virl_data.errors import VirlError
from virl_data.types import (
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
