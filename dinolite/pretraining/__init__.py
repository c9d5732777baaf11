"""Pretraining and distillation as tasks: the engine task (train.py), the library loop (library.py),
the run's length (plan.py) and time budget (budget.py), the monitor, the run directory's rules, bad data,
the printed lines and the trained backbones' export."""
