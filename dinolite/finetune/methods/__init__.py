"""The fine-tuning methods: ``METHODS`` maps each ``--method`` name to its ``FinetuneMethod`` class (``registry.py``;
one module per method), and ``finetune`` runs the one a config names (``run.py``).

A new method: a module here with a ``FinetuneMethod`` subclass (``SingleModel`` for one model trained with one
objective) and its entry in ``registry.py``; the config check and the CLI's ``--method`` choices follow.
"""

from .base import FinetuneMethod, SingleModel
from .registry import METHODS
from .run import finetune, prepare_finetune_dir

__all__ = ["METHODS", "FinetuneMethod", "SingleModel", "finetune", "prepare_finetune_dir"]
