"""A spec that is not UTF-8 text (an image or a model passed by mistake) is a bad spec like any
other: one line naming the file, exit 2, no traceback. The bad-spec corpus (tests/specs/bad/) holds
text files whose first line states the expected message, so the binary case is written here."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.cli import main

# a PNG header: byte 0x89 cannot start a UTF-8 sequence
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_binary_spec_is_one_line_naming_the_file(command: str, tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(PNG)
    runs = tmp_path / "runs"
    argv = [command, str(spec)] + (["--runs", str(runs)] if command == "run" else [])
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"frontier: spec: '{spec}' is not UTF-8 text (byte 0 is 0x89)"]
    assert "Traceback" not in captured.err + captured.out
    assert not runs.exists(), "a rejected spec writes nothing"

