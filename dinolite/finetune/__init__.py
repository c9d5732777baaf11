"""Fine-tuning on labelled data with self-distillation: supervised baseline, born-again generations,
layer-wise (multi-exit) distillation and augmentation consistency, as one command; the methods and their
registry are in ``methods/``."""
