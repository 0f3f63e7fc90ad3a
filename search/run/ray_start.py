"""Ray on the driver: a cluster's address or a local Ray, with the settings the search relies on."""

from __future__ import annotations

import logging
import os
import warnings

import optuna
import ray


def start_ray(address: str | None) -> None:
    """Connect to ``address`` (else ``RAY_ADDRESS``, Ray's own variable) or start a local Ray without
    its dashboard; a Ray this process already started is reused. Never Ray's default of joining
    whatever cluster it finds on the machine: a search without ``--address`` runs locally."""
    # Intermediate per-stage reports carry no objectives; Tune's strict check would reject them.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # one checkpoint per stage is the design; Ray warns about that frequency on every snapshot
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    # Tune's console reporter: our SearchProgress is the display; verbose=0 silences the old one
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if ray.is_initialized():
        return
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
