"""Test-wide settings: headless plotting and Keras on the torch backend."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("KERAS_BACKEND", "torch")
