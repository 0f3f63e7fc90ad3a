"""Disk a search keeps (issue 19): stage checkpoints refer to the stage cache instead of storing
the model again, a retried trial still resumes from them, they go once the trial's result is
recorded, a second search reuses the first one's cache (``--cache``), and ``frontier clean``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from ray import tune

from search.cli import main
from search.run.driver import run_search
from search.spec.load import parse_spec
from tests.tiny_spec import tiny_spec
from trainables.layout import RunFolder
from trainables.pipeline.cache import StageCache
from trainables.pipeline.plan import Plan
from trainables.pipeline.run import _restore
from search.results.files import read_trials

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]  # tests/conftest.py
SPEC = tiny_spec("first", trials=1, space={"order": "PBA", "s1": 0.4, "s2": 0.7})
SPEC.update(concurrency=1, keep_checkpoints=True)




@pytest.fixture(scope="module")
def first(tmp_path_factory) -> Path:
    """One trial that crashes after its second stage, is retried and resumes from a checkpoint
    that refers to the cache; its checkpoints are kept (``keep_checkpoints``)."""
    Path(os.environ["FRONTIER_FAULT_FILE"]).write_text(json.dumps({"after_stage": 2}))
    return run_search(parse_spec(SPEC), yaml.safe_dump(SPEC), runs_root=tmp_path_factory.mktemp("runs"))


def test_a_retried_trial_resumes_from_checkpoints_that_refer_to_the_cache(first: Path) -> None:
    frame = pd.read_csv(first / "trials.csv", dtype={"resumed_at": str, "trial_id": str})
    assert len(frame) == 1 and frame["status"][0] == "ok", frame["error"].tolist()
    assert frame["resumed_at"][0] == "2", "the retry resumed at stage 2 (T), not from scratch"
    run = RunFolder(first)
    checkpoints = run.trial_checkpoints(frame["trial_id"][0])
    assert len(checkpoints) >= 4, "kept: D, P1, T, P2 (the retry's included)"
    entries = {e.key for e in StageCache(run.cache).entries()}
    for folder in checkpoints:
        assert not (folder / "model.pt").exists(), "no second copy of the state dict"
        assert json.loads((folder / "progress.json").read_text())["cache_key"] in entries
    assert not list((run.cache / ".holds").iterdir()), "the trial's holds were released"


def test_a_checkpoint_whose_entry_is_gone_starts_afresh(first: Path) -> None:
    run = RunFolder(first)
    trial_id = read_trials(first)["trial_id"][0]
    plan = Plan.model_validate(json.loads(run.plans_json.read_text())[trial_id])
    folder = run.trial_checkpoints(trial_id)[1]  # after P1
    cache = StageCache(run.cache)
    model, progress = _restore(tune.Checkpoint.from_directory(str(folder)), plan, cache)
    assert model is not None and progress.index == 2 and progress.resumed_at == [2]
    entry = cache.root / progress.cache_key
    (entry / "model.pt").write_bytes(b"garbled")
    model, progress = _restore(tune.Checkpoint.from_directory(str(folder)), plan, cache)
    assert model is None and progress.index == 0, "a corrupt entry: the stages are recomputed"
    assert not entry.exists(), "and the corrupt entry is gone"


def test_a_second_search_reuses_the_first_ones_dense_stage_and_drops_its_checkpoints(first: Path, tmp_path: Path) -> None:
    spec = tiny_spec("second", trials=1, space={"order": "PA", "s2": 0.7})
    spec["concurrency"] = 1
    run_dir = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path, cache_dir=first / "cache")
    frame = read_trials(run_dir)
    assert frame["status"][0] == "ok" and frame["cached_stages"][0].split(",") == ["D"], frame["cached_stages"]
    run = RunFolder(run_dir)
    assert run.cache_root() == (first / "cache").resolve() and not run.cache.exists()
    assert not run.trial_checkpoints(frame["trial_id"][0]), "a finished trial's checkpoints are gone"
    assert not list((first / "cache" / ".holds").iterdir())


def test_clean_reports_then_removes_checkpoints_and_unheld_entries(first: Path, capsys) -> None:
    run = RunFolder(first)
    trial_id = read_trials(first)["trial_id"][0]
    entries = len(StageCache(run.cache).entries())
    assert main(["clean", str(first), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "checkpoints" in out and f"{entries} unheld cache entries" in out and "would remove" in out
    assert run.trial_checkpoints(trial_id) and len(StageCache(run.cache).entries()) == entries
    assert main(["clean", str(first)]) == 0
    assert not run.trial_checkpoints(trial_id) and not StageCache(run.cache).entries()
    assert (first / "plans.json").is_file() and (first / "trials" / trial_id / "model.h5").is_file(), "rerun's needs stay"
    assert main(["clean", str(first / "trials")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
