"""The bad-spec corpus: each malformed spec gets `frontier check` and `frontier run` to print one
line per problem naming its key path, exit 2, show no traceback and write nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.cli import main

BAD = sorted((Path(__file__).resolve().parent / "specs" / "bad").glob("*.yaml"))


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


def test_the_corpus_is_large_enough() -> None:
    assert len(BAD) >= 20


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_spec_is_one_clear_line_and_exit_2(path: Path, command: str, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    argv = [command, str(path)] + (["--runs", str(runs)] if command == "run" else [])
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines and all(line.startswith("frontier: ") for line in lines), lines
    assert any(expected(path) in line for line in lines), (expected(path), lines)
    assert "Traceback" not in captured.err + captured.out
    assert not runs.exists(), "a rejected spec writes nothing"


@pytest.mark.parametrize("name", ["../escape", "/etc", ".hidden", "a/b", "x" * 65, ""])
def test_run_name_cannot_leave_the_runs_folder(name: str, tmp_path: Path, capsys) -> None:
    spec = Path(__file__).resolve().parent.parent / "spaces" / "quickstart.yaml"
    runs = tmp_path / "runs"
    assert main(["run", str(spec), "--name", name, "--runs", str(runs)]) == 2
    assert "frontier: --name:" in capsys.readouterr().err
    assert not runs.exists() and not (tmp_path / "escape").exists()
