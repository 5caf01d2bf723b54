"""Verify and curate a corpus: the named checks that accept or reject each record with its reasons (``checks``)
and the polars stages that describe, filter, deduplicate and split it (``curate``)."""
