"""``python -m multitask_mx`` is the same as the ``multitask-mx`` command."""
import sys

from .cli import main

sys.exit(main())
