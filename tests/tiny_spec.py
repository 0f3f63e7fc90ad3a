"""The tiny digits search the end-to-end tests run (real Ray, real Optuna, seconds per trial)."""

from __future__ import annotations

from typing import Any


def tiny_spec(name: str, *, trials: int, space: dict[str, Any], transfer_epochs: int = 2,
              recover_epochs: int = 0, reference: bool = False) -> dict[str, Any]:
    """A spec dict: small_resnet from digits 0-4 to 5-9, random sampler, 2 trials at a time of 1 CPU;
    the reference trial (the dense model as it is) only with ``reference``, so that every trial of
    a test's search samples the space."""
    return {
        "name": name,
        "seed": 0,
        "data": {"source": {"name": "digits", "classes": [0, 1, 2, 3, 4]},
                 "target": {"name": "digits", "classes": [5, 6, 7, 8, 9]}},
        "model": {"name": "small_resnet"},
        "sampler": "random",
        "trials": trials,
        "concurrency": 2,
        "resources": {"cpu": 1},
        "budgets": {
            "dense": {"epochs": 2, "batch_size": 64},
            "transfer": {"epochs": transfer_epochs, "batch_size": 64},
            "prune": {"epochs": 1, "recover_epochs": recover_epochs, "frequency": 4, "batch_size": 64},
            "benchmark": {"warmup": 1, "runs": 5},
        },
        "space": space,
        "reference": reference,
    }
