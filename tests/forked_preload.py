"""Imported once by the server that tests/forked.py forks its processes from: one torch thread (the suite's
setting, read by OpenMP when torch loads), then what every dinolite command imports."""

import os

os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402, F401

import dinolite.cli  # noqa: E402, F401
import dinolite.export  # noqa: E402, F401
import dinolite.pretraining.train  # noqa: E402, F401
