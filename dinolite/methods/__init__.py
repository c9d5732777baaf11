"""The training methods and their factory: the one step skeleton (step.py), what every pretraining
method shares (base.py), DINO, distillation, the warm starts (model.init) and build_method (factory.py)."""
