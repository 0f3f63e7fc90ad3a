"""Shared fixtures: digits splits for the source (0-4) and target (5-9) domains, and one local Ray."""

from __future__ import annotations

import os

# Two xdist workers on two cores each run torch with 2 threads: OpenMP's default of spinning while it
# waits for a preempted sibling thread made a test 13x slower beside another worker (test_int8's
# resnet18 case: 10 s alone, 124 s beside the bench smokes, 17 s beside them with PASSIVE). libgomp
# reads this once, when torch loads it, so it is set before torch is imported; Ray's workers and the
# bench child inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from trainables.data import DataSpec, load_data

torch.set_num_threads(2)
THREADS = 2


@pytest.fixture(autouse=True)
def same_threads_for_every_test():
    """Every test starts with torch on THREADS threads, whatever an earlier test in this worker
    process set (an in-process `frontier rerun` sets the trial's CPU count): float sums, and so a
    training run's path, depend on the thread count (EPruning on digits: 0.978 on 2 threads, 0.903
    on 1)."""
    torch.set_num_threads(THREADS)


os.environ.setdefault("RAY_AUTH_MODE", "disabled")

SOURCE = DataSpec(name="digits", classes=[0, 1, 2, 3, 4], image_size=32)
TARGET = DataSpec(name="digits", classes=[5, 6, 7, 8, 9], image_size=32)


@pytest.fixture(scope="session")
def source_splits():
    return load_data(SOURCE)


@pytest.fixture(scope="session")
def target_splits():
    return load_data(TARGET)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local Ray of 2 CPUs, no dashboard and a small object store for the module's tests (started
    once per module: a test file stays in one xdist worker), shut down after its last test.

    ``$FRONTIER_FAULT_FILE`` names a file in a folder of the module's own while it runs: Ray's workers
    inherit the driver's environment, so a test arms a fault by writing that file
    (:func:`trainables.pipeline.run._injected_fault`); until one does, nothing fires.
    """
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    before = os.environ.get("FRONTIER_FAULT_FILE")
    os.environ["FRONTIER_FAULT_FILE"] = str(tmp_path_factory.mktemp("fault") / "fault.json")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=150 * 1024**2)
    yield
    ray.shutdown()
    if before is None:
        os.environ.pop("FRONTIER_FAULT_FILE", None)
    else:
        os.environ["FRONTIER_FAULT_FILE"] = before
