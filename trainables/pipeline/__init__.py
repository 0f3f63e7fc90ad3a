"""Plans and their execution: the plan a driver sends, the stage cache, and the run of a plan
(with the Ray Tune trainable). The top layer of :mod:`trainables` (``tests/test_layers.py``).
"""
