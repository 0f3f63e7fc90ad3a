"""What a trial hands the driver: the keys of its results, and what became of it.

The contract between the trainable (:func:`trainables.pipeline.run.tune_trial`) and everything on
the driver that reads a trial's results (the searcher, ``trials.csv``, the live progress):

- After every stage but the last the trial reports ``{STAGE_INDEX: stages done, STAGES: stages
  in its plan, "seconds.<slot>": ...}`` with a checkpoint; with early stopping on, a report after a
  stage that is measured also holds :data:`BOUNDARY` (the boundary's name, ``D|P1|T``), its rung
  (``boundary_rung``, ``target:P``) and its ``boundary.<objective>`` measurements with their noise
  (:mod:`trainables.pipeline.boundary`). Every report after a stage and the final result hold
  :data:`BOUNDARY_SECONDS`, the seconds spent measuring boundaries so far (early stopping's own cost).
- Its final result holds :data:`STAGE_INDEX` equal to :data:`STAGES` and every objective of
  :data:`trainables.objectives.OBJECTIVE_NAMES` as a finite float.
- A failure that would repeat if retried (training diverged, an objective not finite) is not raised:
  the trial reports a result whose :data:`FAILED` key says why, and ends. Anything raised is Tune's
  error (a lost node, a bug), which Tune retries.

:func:`classify` reads a trial's last result and error by that contract. No torch or Ray here: the
driver's light commands read these names.

Example:
    >>> classify({STAGE_INDEX: 2, STAGES: 5, BOUNDARY: "D|T"}, None)
    'stopped'
    >>> classify({FAILED: "Diverged: loss is nan", STAGE_INDEX: 1, STAGES: 5}, None)
    'failed'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..objectives import OBJECTIVE_NAMES

STAGE_INDEX = "stage_index"  # the result key: stages done so far
STAGES = "stages"  # the result key: stages in the trial's plan
BOUNDARY = "boundary"  # the result key naming the boundary; its measurements are ``boundary.<objective>``
BOUNDARY_SECONDS = "boundary_seconds"  # the result key: seconds the trial spent measuring boundaries so far
# The result key of a trial that failed for good without raising (its training diverged, an
# objective is not finite): its value says why. Tune retries a raised error, and these would fail again.
FAILED = "failed"

OK, STOPPED, FAILED_STATUS = "ok", "stopped", "failed"  # what :func:`classify` returns: ``trials.csv``'s status
STATUSES = (OK, STOPPED, FAILED_STATUS)


def classify(result: Mapping[str, Any] | None, error: Any) -> str:
    """What became of a trial whose last result is ``result`` and whose error is ``error``.

    Returns ``trials.csv``'s ``status``:

    - ``"failed"`` when ``error`` is set (Tune's error, as text or a flag) or the result names a
      failure under :data:`FAILED`;
    - ``"ok"`` when the result is the final one (``STAGE_INDEX == STAGES``) and holds every
      objective of :data:`~trainables.objectives.OBJECTIVE_NAMES` as a finite number;
    - ``"stopped"`` when the trial ended without an error before its last stage (``STAGE_INDEX``
      present and not ``STAGES``): only the early-stopping scheduler ends a trial so;
    - ``"failed"`` otherwise (a final result missing an objective, a trial that reported nothing).

    Args:
        result: the trial's last result (None or empty: it reported nothing).
        error: Tune's error for the trial: None, False or "" when it ended without raising.
    """
    result = result or {}
    if error or result.get(FAILED):
        return FAILED_STATUS
    index = result.get(STAGE_INDEX)
    finished = index is not None and index == result.get(STAGES)
    if finished and all(finite(result.get(name)) for name in OBJECTIVE_NAMES):
        return OK
    if index is not None and not finished:
        return STOPPED
    return FAILED_STATUS


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (an objective's value as the contract needs it)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def progress_report(done: int, stages: int) -> dict[str, int]:
    """The keys a report after ``done`` of ``stages`` stages holds (:data:`STAGE_INDEX`, :data:`STAGES`)."""
    return {STAGE_INDEX: done, STAGES: stages}


def failed_result(reason: str, done: int, stages: int) -> dict[str, Any]:
    """The result of a trial that ends itself with a failure that would repeat, after ``done`` stages."""
    return {FAILED: reason, **progress_report(done, stages)}


def final_result(metrics: Mapping[str, Any], stages: int) -> dict[str, Any]:
    """A trial's final result from its last stage's ``metrics``: the plain values (numbers and text),
    :data:`FAILED` naming any objective that is missing or not finite, and ``STAGE_INDEX == STAGES``."""
    final = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    bad = [k for k in OBJECTIVE_NAMES if not finite(final.get(k))]
    if bad:
        final[FAILED] = f"objective(s) {', '.join(bad)} not finite: {[final.get(k) for k in bad]}"
    final.update(progress_report(stages, stages))
    return final
