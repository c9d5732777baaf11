"""Evaluation of frozen backbones: feature extraction and weighted k-NN."""
