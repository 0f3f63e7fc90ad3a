"""Binary differential evolution over unit states: the operators of EPruning's Algorithm 1.

Plain functions on boolean tensors, a population ``(S, D)`` of S states over D units (True: the
unit is active), each random draw from the caller's ``torch.Generator``: the initial population,
mutation (eq. 4 of the EPruning paper), crossover (eq. 5), selection (eq. 6), the convergence
measure Δs (eq. 7) and early state convergence, and the repair that keeps a state's count of
active units (``constrain``) and every unit group alive. The search that uses them, one
*generation* per training batch, is :mod:`trainables.stages.epruning`.
"""

from __future__ import annotations

import torch


def init_population(size: int, units: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """S^(0): ``size x units`` states, each unit active with probability ``p`` (Bernoulli(p))."""
    return torch.rand(size, units, generator=generator) < p


def donors(size: int, generator: torch.Generator) -> torch.Tensor:
    """For each state i, three mutually different indices i1, i2, i3, each different from i; ``(S, 3)``."""
    if size < 4:
        raise ValueError(f"differential evolution needs a population of at least 4 but got {size}")
    picks = []
    for i in range(size):
        others = torch.tensor([j for j in range(size) if j != i])
        picks.append(others[torch.randperm(size - 1, generator=generator)[:3]])
    return torch.stack(picks)


def mutate(states: torch.Tensor, factor: float, generator: torch.Generator,
           picks: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 4: v_i = 1 - s_i1 where s_i2 != s_i3 and r_d < F, else s_i1.

    Args:
        states: ``(S, D)`` bool population S^(t-1).
        factor: F, the mutation factor in [0, 1].
        picks: ``(S, 3)`` donor indices (default: :func:`donors`).
    """
    picks = donors(states.shape[0], generator) if picks is None else picks
    base, a, b = states[picks[:, 0]], states[picks[:, 1]], states[picks[:, 2]]
    flip = (a != b) & (torch.rand(states.shape, generator=generator) < factor)
    return base ^ flip


def crossover(states: torch.Tensor, mutants: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Eq. 5: the child takes the mutant's unit where r'_d <= Cr, else the parent's."""
    take = torch.rand(states.shape, generator=generator) <= rate
    return torch.where(take, mutants, states)


def select(parents: torch.Tensor, parent_energy: torch.Tensor, children: torch.Tensor,
           child_energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6: each child replaces its parent when its energy is not higher; returns (states, energies)."""
    better = child_energy <= parent_energy
    return torch.where(better[:, None], children, parents), torch.where(better, child_energy, parent_energy)


def convergence(energies: torch.Tensor) -> float:
    """Eq. 7: Δs = E_b - mean(E), with E_b the lowest energy in the population (<= 0)."""
    return float(energies.min() - energies.mean())


def converged(states: torch.Tensor, energies: torch.Tensor) -> bool:
    """Early state convergence (Section 2 of the EPruning paper): Δs = 0 by eq. 7, or all S states equal.

    The paper's test is Δs = 0; with energies scored on different batches (``selection:
    stored``) equal states almost never have equal energies, so a population whose S rows are
    all the same state s_b also counts as converged: that is the convergence the paper describes.
    """
    return convergence(energies) == 0 or bool((states == states[0]).all())


def repair(states: torch.Tensor, sizes: list[int], active: int | None, generator: torch.Generator,
           allowed: torch.Tensor | None = None, counts: list[int] | None = None) -> torch.Tensor:
    """States with exactly ``active`` active units (None: any count), at least one per group, and
    none outside ``allowed`` (units an earlier stage removed stay removed). ``counts`` instead
    holds every group to its own count of active units (a latency target's allocation, at most the
    group's allowed units, at least 1), which fixes the total too.

    Units are switched on or off at random positions, so the repair adds no bias toward any
    layer beyond keeping every group alive (or at its count).
    """
    allowed = torch.ones(states.shape[1], dtype=torch.bool) if allowed is None else allowed
    out = states & allowed
    bounds = torch.tensor([0, *sizes]).cumsum(0)
    if counts is not None:
        for row in out:
            for (lo, hi), count in zip(zip(bounds[:-1].tolist(), bounds[1:].tolist()), counts):
                part, excess = row[lo:hi], int(row[lo:hi].sum()) - count
                if excess > 0:
                    _switch(part, part.clone(), excess, False, generator)
                elif excess < 0:
                    _switch(part, ~part & allowed[lo:hi], -excess, True, generator)
        return out
    for row in out:
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            if not row[lo:hi].any():
                _switch(row[lo:hi], allowed[lo:hi], 1, True, generator)
        if active is None:
            continue
        excess = int(row.sum()) - active
        if excess > 0:
            _switch(row, row & _removable(row, bounds), excess, False, generator)
        elif excess < 0:
            _switch(row, ~row & allowed, -excess, True, generator)
    return out


def _removable(row: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """Active units that may go without emptying their group: all but one kept at random per group."""
    keep = torch.zeros_like(row)
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        on = torch.nonzero(row[lo:hi]).flatten()
        keep[lo + int(on[0])] = True  # the first active unit of each group stays
    return ~keep


def _switch(row: torch.Tensor, candidates: torch.Tensor, count: int, value: bool, generator: torch.Generator) -> None:
    where = torch.nonzero(candidates).flatten()
    chosen = where[torch.randperm(len(where), generator=generator)[:count]]
    row[chosen] = value
