"""Review tools: push a corpus to a tool where people look at and fix chains, pull their verdicts back.

Each integration is one module and the only one importing its tool's library, imported lazily so that
``import virl_data`` never loads them:

- ``virl_data.integrations.fiftyone``: a corpus as a FiftyOne dataset (chain = ``Detections`` with a step order,
  a ``Polylines`` through the box centres, saved curator views); tags and edited boxes come back as reviews.
- ``virl_data.integrations.labelstudio``: a corpus as Label Studio tasks with the chain as predictions; the task
  layout and the rules turning annotations into reviews (no server needed) are in ``labelstudio_tasks``.

Both turn what a person did into ``virl_data.review.merge.ReviewEdit`` s and merge them with ``merge.merge_reviews``:
append-only, matched by record id, idempotent, every corpus record kept.
"""
