"""Attacks replayed against a running Backworks to measure how it holds (``python ops/attacks/edge.py``)."""
