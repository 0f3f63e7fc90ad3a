"""``frontier sweep MODEL_DIR``: the sharing sensitivity of a final model, to choose share groups.

``MODEL_DIR`` is what ``frontier rerun`` writes (``model.pt`` and ``card.json`` with the plan). The
sweep shares one layer group at a time at each centroid count, measures accuracy on the target's
validation split (``val_accuracy``, which the proposal chooses on) and on its test split
(``test_accuracy``, reported beside it, never used to choose) and the artifact's bytes, and writes
``sensitivity.csv`` and ``sensitivity.html`` in the folder; it prints the proposal (the fewest
centroids per group within ``--max-drop`` of the unshared validation accuracy), ready to paste
under ``budgets.share.groups``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from trainables.data import load_data
from trainables.errors import FrontierError
from trainables.layout import FinalFolder
from trainables.models import rebuild
from trainables.pipeline.plan import Plan
from trainables.stages.share import CENTROIDS
from trainables.train import EVAL_BATCH_SIZE, loader

from .sensitivity import propose_groups, sensitivity, write_sensitivity


def sweep(model_dir: str | Path, *, groups: Sequence[str] | None = None, ks: Sequence[int] = CENTROIDS,
          method: str = "kmeans", max_drop: float = 0.01) -> dict:
    """Run the sweep on ``model_dir``'s model; returns the proposal ``{group: k or 'keep'}``."""
    folder = Path(model_dir)
    final = FinalFolder(folder)
    card_path, state_path = final.card, final.state_dict
    if not card_path.is_file() or not state_path.is_file():
        raise FrontierError(f"model_dir: '{folder}' needs {card_path.name} and {state_path.name} (run 'frontier rerun' first)")
    bad = [k for k in ks if k not in CENTROIDS]
    if bad:
        raise FrontierError(f"--ks: centroid counts must be powers of two from 1 to 256, got {bad[0]}")
    plan = Plan.model_validate(json.loads(card_path.read_text())["plan"])
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    dense = plan.architecture
    model = rebuild(dense.model, state, path=dense.model_path).eval()
    splits = load_data(plan.target)
    val, test = (loader(split, EVAL_BATCH_SIZE, shuffle=False) for split in (splits.val, splits.test))
    table = sensitivity(model, val, test, ks=ks, groups=groups, method=method)
    write_sensitivity(table, folder, f"sharing sensitivity of {plan.pipeline} ({plan.target.name})")
    return propose_groups(table, max_drop)
