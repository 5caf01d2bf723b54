"""The record core: the one record type and what every other module needs to speak about it.

- ``types``: ``Box``, ``RationaleStep``, ``RationaleRecord`` and the rest (frozen dataclasses, stdlib only);
- ``schema``: the one column definition (polars / Arrow / HF features) and the schema-version check;
- ``boxes``: canonical-box math (area, IoU, union; numpy and polars expressions);
- ``boxconv``: every external box convention to and from the canonical one;
- ``boxanswer``: a box written as an answer string (grounding records);
- ``answers``: a prediction scored against a record's answer (exact, numeric, multiple choice, box IoU);
- ``errors``: ``VirlError`` and its subclasses, the user errors both command lines print as one line.

The core imports nothing else of ``virl_data`` (an import-linter contract in ``pyproject.toml`` checks it).
"""
