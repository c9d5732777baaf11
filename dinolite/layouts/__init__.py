"""Backbone weights in the layouts people have (timm / dinolite exports, official DINOv2 files, Hugging Face
``transformers`` folders), mapped to timm's VisionTransformer names with every key accounted for.

``hf`` and ``dinov2`` are leaves (they map names and shapes); ``source`` finds and reads a backbone-only source
for ``model.init``; ``fit`` fits its weights to the recipe's crops and channels.
"""
