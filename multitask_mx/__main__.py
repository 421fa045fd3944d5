"""``python -m multitask_mx`` is the same as the ``multitask-mx`` command."""
from .cli import run_and_exit

run_and_exit()
