"""Launchers that start dinolite runs on clusters (submitit)."""
