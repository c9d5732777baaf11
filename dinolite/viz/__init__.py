"""Pictures of a run: last-block attention maps (attention.py) and training curves (curves.py)."""
