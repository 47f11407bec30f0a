"""``python -m clip4hoi`` = the ``clip4hoi`` command."""

import sys

from clip4hoi.cli import main

sys.exit(main())
