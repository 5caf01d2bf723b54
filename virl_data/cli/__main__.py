"""``python -m virl_data.cli``: the same as the ``virl-data`` console script."""

import sys

from virl_data.cli import main

sys.exit(main())
