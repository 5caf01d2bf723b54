"""virl_train: train vision-language models against ground-truth visual rationales (ViRL).

Reads the splits written by ``virl-data export`` as the same ``RationaleRecord`` type (no second schema).
Heavy libraries (torch, transformers, accelerate) are imported inside the modules that need them.
"""

__version__ = "0.1.0"
