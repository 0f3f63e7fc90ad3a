"""Unit importance: how much each unit of a unit group is worth keeping, as swappable objects.

In the spirit of Torch-Pruning's ``Importance`` (``__call__(group) -> scores``): a pruner that
removes units (:class:`~trainables.stages.pruners.Channel`, the unit surgery benchmark) asks an
:class:`Importance` for one score per unit of a :class:`~trainables.compress.units.UnitGroup`
and removes the lowest-scored units first. :class:`~trainables.compress.importance.l1.L1Importance`
(``l1``) is the first implementation and the default.

Adding an importance is one module in this package and its test: a subclass of
:class:`Importance` with a ``name``. Subclasses register themselves by that name when their
module is imported, and :func:`importance` imports every module of this package before it looks
a name up, so nothing else lists them.

Example:
    >>> from trainables.compress.importance import importance
    >>> type(importance("l1")).__name__
    'L1Importance'
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from ..units import UnitGroup

_REGISTRY: dict[str, type[Importance]] = {}


class Importance(ABC):
    """Scores the units of one unit group; the pruner removes the lowest scores first.

    The contract of an implementation (a subclass in its own module of this package):

    - ``name``: a class attribute, the string that picks it (:func:`importance`); unique.
    - ``__call__(model, group)`` receives the model as it is (masks applied: read ``module.weight``,
      which is ``weight_orig * weight_mask`` under a mask; the model may be on any device) and one
      unit group (:mod:`trainables.compress.units`: module names and channel indices), and returns
      a 1-D float tensor of ``group.size`` scores on the CPU, unit k's score at index k; a higher
      score means more important.
    - It never changes the model (no parameter, buffer, mask or BatchNorm statistic; no training
      forward) and draws no random numbers: the pruners' masks and random streams must not depend
      on which importance scored them beyond the scores themselves.

    Which units are already pruned is not its concern: the pruner sets their scores aside.
    """

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        abstract = any(getattr(getattr(cls, method, None), "__isabstractmethod__", False)
                       for method in ("__call__",))
        if "name" not in cls.__dict__:
            if not abstract:
                raise TypeError(f"{cls.__qualname__}: an Importance needs a class attribute `name`")
            return
        name = cls.__dict__["name"]
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__}: name must be a non-empty string but got {name!r}")
        known = _REGISTRY.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(f"{cls.__qualname__}: importance name {name!r} is taken by {known.__qualname__}")
        _REGISTRY[name] = cls

    @abstractmethod
    def __call__(self, model: nn.Module, group: UnitGroup) -> torch.Tensor:
        """One score per unit of ``group`` (CPU float tensor of ``group.size``; higher: more important)."""


def _discover() -> None:
    """Import every module of this package, so that each Importance registers itself."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def importance_names() -> tuple[str, ...]:
    """The names of every importance in this package, sorted."""
    _discover()
    return tuple(sorted(_REGISTRY))


def importance(name: str) -> Importance:
    """A new instance of the importance called ``name``.

    Raises:
        ValueError: no importance has that name (the message lists the known ones).
    """
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"importance must be one of {', '.join(sorted(_REGISTRY))} but got {name!r}")
    return _REGISTRY[name]()
