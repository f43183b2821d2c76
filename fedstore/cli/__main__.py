"""``python -m fedstore.cli`` is the ``fedstore`` command."""

import sys

from fedstore.cli.entry import main

sys.exit(main())
