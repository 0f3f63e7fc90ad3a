"""The run folder's layout is worked out by one class, RunFolder."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainables.errors import FrontierError
from trainables.layout import TUNE_EXPERIMENT, RunFolder


def test_a_run_folder_names_every_file_and_folder_of_the_run(tmp_path: Path) -> None:
    run = RunFolder.named("quick", runs_root=tmp_path)
    assert run.root == tmp_path.resolve() / "quick" and run.name == "quick"
    rel = {k: getattr(run, k).relative_to(run.root).as_posix()
           for k in ("spec_yaml", "trials_csv", "front_json", "plans_json", "cache", "tune")}
    assert rel == {"spec_yaml": "spec.yaml", "trials_csv": "trials.csv", "front_json": "front.json",
                   "plans_json": "plans.json", "cache": "cache", "tune": TUNE_EXPERIMENT}
    assert run.trial("t1") == run.root / "trials" / "t1" and run.final("t1") == run.root / "final" / "t1"


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "", "x" * 65])
def test_a_name_that_could_leave_the_runs_folder_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(FrontierError, match="--name"):
        RunFolder.named(name, runs_root=tmp_path)
