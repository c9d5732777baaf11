"""The fine-tuning methods: ``METHODS`` maps each ``--method`` name to its ``Method`` class (``registry.py``;
one module per method), and ``finetune`` runs the one a config names (``run.py``).

A new method: a module here with a ``Method`` subclass (``SingleModel`` for one model trained with one
objective) and its entry in ``registry.py``; the config check and the CLI's ``--method`` choices follow.
"""

from .base import Method, SingleModel
from .registry import METHODS
from .run import finetune, prepare_run_dir

__all__ = ["METHODS", "Method", "SingleModel", "finetune", "prepare_run_dir"]
