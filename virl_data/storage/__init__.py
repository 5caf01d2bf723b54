"""Files on disk: the corpus (``corpus``: Parquet / JSONL, atomic writes, image roots) and the trajectory log of a
policy's episodes (``trajectories``: written by the trainer, read by ``virl-train score`` and the review queue)."""
