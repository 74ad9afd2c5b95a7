"""Loaders for public datasets, one module per format (`zreward data convert --format NAME`).

Each module's docstring states the field layout it assumes; each exposes `DIMS`, `EXTRA` (notes written to
dataset.json) and `run(src, sink)`. The registry of names lives in `zreward.data.convert.FORMATS`.
"""
