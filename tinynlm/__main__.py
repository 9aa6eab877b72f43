"""``python -m tinynlm``: the ``tinynlm`` command line."""

import sys

from .cli import main

sys.exit(main())
