"""The review loop: reviews merged back into the corpus (``merge``: append-only, idempotent, the *effective* chain
and answer), the queue of records a policy disagrees with (``queue``), what a review round changed (``diff``) and
seeded chain corruptions for testing the loop (``corrupt``). The review tools themselves are ``integrations``."""
