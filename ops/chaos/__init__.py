"""The chaos report: ``python ops/chaos/run.py`` breaks a running stack fault by fault and tables what clients saw."""
