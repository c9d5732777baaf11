"""The pure maths of DINO: the networks (models.py), the multi-crop views (augment.py), the losses,
iBOT's masks, the schedules and the optimizer's parameter groups. No file is read or written here."""
