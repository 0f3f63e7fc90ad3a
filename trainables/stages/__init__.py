"""The stages of a pipeline (``D``, ``T``, ``P<s>``/``E<s>``, ``Q``/``Q|R``, ``B``), each
``run(model, context) -> (model, metrics)`` (:mod:`trainables.stage`).

Imports the base modules, :mod:`trainables.compress` and :mod:`trainables.measure`, never
:mod:`trainables.pipeline` (``tests/test_layers.py``).
"""
