"""``python -m fastgan train ...`` / ``python -m fastgan theory``: see :mod:`fastgan.train.cli`."""
import sys

from .train.cli import main

if __name__ == "__main__":
    sys.exit(main())
