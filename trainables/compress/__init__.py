"""Compression primitives: masks, units, surgery, clustering and the HDF5 artifact.

The lowest layer above the base modules (``errors``, ``models``, ...): it imports nothing from
``measure``, ``stages`` or ``pipeline`` (``tests/test_layers.py`` checks it).
"""
