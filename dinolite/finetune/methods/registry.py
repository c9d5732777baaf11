"""The fine-tuning methods by ``--method`` name: config validation, the CLI's choices and the run read this."""

from __future__ import annotations

from .base import FinetuneMethod
from .born_again import BornAgainMethod
from .consistency import ConsistencyMethod
from .layerwise import LayerwiseMethod
from .supervised import SupervisedMethod

# A new method: its module (a FinetuneMethod subclass) and one entry here.
METHODS: dict[str, type[FinetuneMethod]] = {m.name: m for m in (SupervisedMethod, BornAgainMethod, LayerwiseMethod,
                                                        ConsistencyMethod)}
