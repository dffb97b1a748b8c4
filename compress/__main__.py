"""``python -m compress``: the ``driftgate compress`` CLI without the gateway."""

import sys

from compress.cli import main

if __name__ == "__main__":
    sys.exit(main())
