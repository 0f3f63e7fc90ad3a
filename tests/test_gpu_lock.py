"""The per-GPU lock TensorRT builds and times under: two real processes, one GPU identity, one at
a time. The second process is seen blocked in ``flock`` (a waiter in ``/proc/locks``), never timed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainables.errors import FrontierError
from trainables.measure.backends._gpu_lock import exclusive, gpu_identity, lock_path

ROOT = Path(__file__).resolve().parent.parent
PROC_LOCKS = Path("/proc/locks")
UUID = "6f1c2e3a-9b7d-4c11-8e2f-0a1b2c3d4e5f"
CHILD = """
import sys
from pathlib import Path
from trainables.measure.backends._gpu_lock import exclusive
path, log, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
print("waiting", flush=True)
with exclusive(path):
    with log.open("a") as f:
        f.write(f"{name} in\\n")
    print("entered", flush=True)
    if name == "holder":
        sys.stdin.readline()  # hold the lock until the test says release
    with log.open("a") as f:
        f.write(f"{name} out\\n")
"""


def child(name: str, path: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(log), name], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def blocked_on(pid: int, path: Path) -> bool:
    """``pid`` waits for a lock on ``path``: ``/proc/locks`` lists it as a blocked waiter (``->``)."""
    inode = os.stat(path).st_ino
    for line in PROC_LOCKS.read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "->" and fields[5] == str(pid) and fields[6].endswith(f":{inode}"):
            return True
    return False


@pytest.mark.skipif(not PROC_LOCKS.is_file(), reason="needs Linux's /proc/locks to see a blocked waiter")
def test_a_second_process_waits_for_the_gpu_until_the_first_lets_go(tmp_path: Path) -> None:
    path, log = lock_path("GPU-8e1f2a", tmp_path), tmp_path / "log"
    holder = child("holder", path, log)
    waiter = None
    try:
        assert holder.stdout.readline() == "waiting\n" and holder.stdout.readline() == "entered\n"
        waiter = child("waiter", path, log)
        assert waiter.stdout.readline() == "waiting\n"  # printed just before it asks for the lock
        deadline = time.monotonic() + 120  # a bound on waiting for an event, not a timing assertion
        while not blocked_on(waiter.pid, path):
            assert waiter.poll() is None, "the waiter ended without waiting for the lock"
            assert time.monotonic() < deadline, "the waiter never blocked on the lock the holder holds"
            time.sleep(0.05)
        assert log.read_text() == "holder in\n"  # blocked: it has not entered
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert waiter.stdout.readline() == "entered\n"
        assert holder.wait(60) == 0 and waiter.wait(60) == 0
    finally:
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert log.read_text().splitlines() == ["holder in", "holder out", "waiter in", "waiter out"]


def test_the_lock_is_released_when_the_block_ends_and_can_be_taken_again(tmp_path: Path) -> None:
    path = lock_path("GPU-1", tmp_path)
    for _ in range(2):
        with exclusive(path):
            assert path.is_file()


@pytest.mark.parametrize(("uuid", "pci", "name", "identity"), [
    (f"GPU-{UUID}", (0, 0x3B, 0), "NVIDIA H100", f"GPU-{UUID}"),
    (UUID, None, "NVIDIA H100", f"GPU-{UUID}"),  # torch's str() of a uuid has no prefix
    ("MIG-2a3b/4c", None, "x", "MIG-2a3b-4c"),
    ("00000000-0000-0000-0000-000000000000", (1, 0x3B, 2), "NVIDIA H100", "pci-0001:3b:02"),
    (None, (0, 0x3B, 0), "NVIDIA H100", "pci-0000:3b:00"),
    ("", None, "NVIDIA H100 80GB HBM3", "name-NVIDIA-H100-80GB-HBM3"),
])  # fmt: skip
def test_a_gpu_is_named_by_its_uuid_else_its_pci_address(uuid, pci, name: str, identity: str) -> None:
    assert gpu_identity(uuid, pci, name) == identity
    assert lock_path(identity, "/locks") == Path(f"/locks/frontier-gpu-{identity}.lock")


@pytest.mark.parametrize("identity", ["", "../etc/passwd", "GPU 1"])
def test_lock_path_refuses_a_name_unsafe_in_a_file_name(identity: str) -> None:
    with pytest.raises(FrontierError) as err:
        lock_path(identity)
    assert str(err.value) == f"identity must be a GPU identity from gpu_identity() but got {identity!r}"
