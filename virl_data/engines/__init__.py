"""Engines that run a whole pipeline (mine → verify → filter → dedup → split → export) from a YAML file:
``pipeline`` in one process (also the demo), ``ray`` on Ray Data with the same results; ``blocks`` cuts the
sources into blocks the Ray engine mines in parallel."""
