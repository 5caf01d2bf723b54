"""``python -m virl_train.cli``: the same as the ``virl-train`` console script."""

import sys

from virl_train.cli import main

sys.exit(main())
