"""Unit importance: how much each unit of a unit group is worth keeping, as swappable objects.

In the spirit of Torch-Pruning's ``Importance`` (``__call__(group) -> scores``): a pruner that
removes units (:class:`~trainables.stages.pruners.Channel`, the unit surgery benchmark) asks an
:class:`Importance` for one score per unit of a :class:`~trainables.compress.units.UnitGroup`
and removes the lowest-scored units first. The implementations (each in its own module):

- ``l1`` (:mod:`.l1`, the default): the L1 norm of the weight rows the group's producers spend on
  a unit, summed over the producers.
- ``bn_scale`` (:mod:`.bn_scale`): |gamma| of the group's BatchNorms (network slimming), mean over
  them; a group without a BatchNorm falls back to ``l1``.
- ``taylor`` (:mod:`.taylor`): first-order Taylor, |w * dL/dw| of the producers' rows (Molchanov et
  al. 2019), with the gradient of the cross-entropy on a few training batches (:meth:`Importance.observe`).
- ``lamp`` (:mod:`.lamp`): the producers' squared L2 norms, LAMP-normalised within the group (Lee
  et al. 2021, eq. 2).

A unit's score over several members is Torch-Pruning's ``group_reduction="mean"``: the mean over
the members that hold the unit (``l1`` keeps the sum it always had; the order within a group is
the same either way). No importance normalises across groups: the allocation does
(:mod:`trainables.stages.allocation`). Members are frontier's own :class:`~trainables.compress.units.UnitGroup`,
not Torch-Pruning's groups, so the scores are computed here on those members; where Torch-Pruning
counts the readers' input columns too, frontier counts only the gates that make the unit.

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
from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import nn

from ..units import Member, UnitGroup, is_depthwise

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
    - ``batches``: how many batches of training data it needs per mask update (0, the default:
      none; an instance may set its own). When it is above 0, the pruner calls
      ``observe(model, batches)`` once per mask update, before it scores that update's groups, with
      that many ``(x, y)`` batches of the stage's training data: ``x`` already a model input
      (normalised, on the model's device), ``y`` the int64 labels on that device, not augmented.
      ``observe`` keeps what ``__call__`` needs (gradients, statistics) on the instance.
    - Neither ``observe`` nor ``__call__`` changes the model (no parameter, buffer, mask,
      BatchNorm statistic, ``.grad``, ``requires_grad`` or train/eval flag left changed; no
      training forward) nor draws random numbers: the pruners' masks and random streams must not
      depend on which importance scored them beyond the scores themselves.

    Which units are already pruned is not its concern: the pruner sets their scores aside.
    """

    name: ClassVar[str]
    batches: int = 0
    """Batches of training data :meth:`observe` wants per mask update; 0: it is not called."""

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

    def observe(self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """See ``batches`` (``self.batches`` model inputs and labels, on the model's device) before
        the groups of one mask update are scored; nothing by default. Leaves the model as it was."""


def unit_sums(values: torch.Tensor, member: Member) -> torch.Tensor:
    """Per-channel ``values`` of ``member``'s module (indexed by its channel) summed per unit:
    ``[group.size]``, unit k the sum over its ``member.spread`` channels (a ``Linear`` after a
    flatten reads H*W inputs per unit; each contributes, as Torch-Pruning's ``scatter_add`` does)."""
    return values[torch.tensor(member.channels, device=values.device)].view(-1, member.spread).sum(dim=1)


def producers(model: nn.Module, group: UnitGroup) -> list[tuple[Member, nn.Module]]:
    """The gates of ``group`` that make its units from their inputs: ``Conv2d``/``Linear`` output
    rows, depthwise convs excluded (they pass one channel on, making nothing new)."""
    found = []
    for gate in group.gates:
        module = model.get_submodule(gate.name)
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not is_depthwise(module):
            found.append((gate, module))
    return found


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
