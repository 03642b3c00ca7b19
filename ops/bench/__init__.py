"""The Backworks benchmark: pipeline vs raw NATS floor vs in-process baseline, and the scale-out of one stage.

Run it with ``python ops/bench/run.py`` (``--help`` lists the options); see ``ops/bench/RESULTS.md``.
"""
