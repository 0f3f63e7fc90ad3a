"""Stage cache: keys by content, atomic entries, corrupt entries detected and recomputed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from trainables.models import build_model
from trainables.pipeline.cache import StageCache, stage_key, state_hash


def test_key_depends_on_every_part() -> None:
    base = stage_key({"final": 0.5}, "abc", {"name": "digits"}, 0)
    assert base == stage_key({"final": 0.5}, "abc", {"name": "digits"}, 0)
    assert len({base, stage_key({"final": 0.6}, "abc", {"name": "digits"}, 0),
                stage_key({"final": 0.5}, "abd", {"name": "digits"}, 0),
                stage_key({"final": 0.5}, "abc", {"name": "cifar10"}, 0),
                stage_key({"final": 0.5}, "abc", {"name": "digits"}, 1)}) == 5


def test_state_hash_sees_one_changed_value() -> None:
    state = build_model("small_resnet", 3).state_dict()
    before = state_hash(state)
    state["fc.bias"][0] += 1e-6
    assert state_hash(state) != before


def test_round_trip_and_hit_counting(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    state = build_model("small_resnet", 3).state_dict()
    assert cache.get("k") is None and cache.misses == 1
    digest = cache.put("k", state, {"accuracy": 0.5})
    loaded, metrics, got = cache.get("k")
    assert got == digest == state_hash(state) and metrics == {"accuracy": 0.5} and cache.hits == 1
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert [p.name for p in tmp_path.iterdir()] == ["k"], "no temporary folders are left behind"


@pytest.mark.parametrize("damage", ["truncate", "tamper_meta", "garble_meta"])
def test_corrupt_entry_is_detected_and_removed(tmp_path: Path, damage: str) -> None:
    cache = StageCache(tmp_path)
    cache.put("k", build_model("small_resnet", 3).state_dict(), {})
    entry = tmp_path / "k"
    if damage == "truncate":
        data = (entry / "model.pt").read_bytes()
        (entry / "model.pt").write_bytes(data[: len(data) // 2])
    elif damage == "tamper_meta":
        meta = json.loads((entry / "meta.json").read_text())
        meta["sha256"] = "0" * 64
        (entry / "meta.json").write_text(json.dumps(meta))
    else:
        (entry / "meta.json").write_text("{not json")
    assert cache.get("k") is None
    assert not entry.exists(), "the corrupt entry is dropped so the stage recomputes"


def test_second_writer_keeps_the_first_entry(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    first = build_model("small_resnet", 3).state_dict()
    cache.put("k", first, {"who": 1})
    cache.put("k", build_model("small_resnet", 3).state_dict(), {"who": 2})
    assert cache.get("k")[1] == {"who": 1}


def test_claim_lets_one_trial_compute_while_the_other_waits(tmp_path: Path) -> None:
    import threading
    import time

    state = build_model("small_resnet", 3).state_dict()
    computed, got = [], []

    def trial(name: str, delay: float) -> None:
        cache = StageCache(tmp_path)
        time.sleep(delay)
        with cache.claim("k") as hit:
            if hit is None:
                computed.append(name)
                time.sleep(1.0)  # the stage runs while the other trial waits
                cache.put("k", state, {"by": name})
            else:
                got.append(hit[1]["by"])

    threads = [threading.Thread(target=trial, args=("a", 0.0)), threading.Thread(target=trial, args=("b", 0.2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert computed == ["a"] and got == ["a"]
    assert not (tmp_path / "k.claim").exists()


def test_a_stale_claim_is_taken_over(tmp_path: Path) -> None:
    import time

    (tmp_path / "k.claim").touch()
    old = time.time() - 120
    os.utime(tmp_path / "k.claim", (old, old))  # its owner died two minutes ago
    cache = StageCache(tmp_path, stale_after=60)
    with cache.claim("k") as hit:
        assert hit is None
        cache.put("k", build_model("small_resnet", 3).state_dict(), {})
    assert cache.get("k") is not None and cache.misses == 1 and cache.hits == 1


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    """A trial killed while computing a stage leaves a fresh claim; its retry must not wait for
    ``stale_after`` (an hour here) when the owner's process is gone; a live owner's claim waits."""
    import socket
    import subprocess
    import sys
    import threading
    import time

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "k.claim").write_text(f"{socket.gethostname()} {int(dead.stdout)}")
    cache = StageCache(tmp_path, stale_after=3600)
    start = time.monotonic()
    with cache.claim("k") as hit:
        assert hit is None
        assert (tmp_path / "k.claim").read_text() == f"{socket.gethostname()} {os.getpid()}"
        cache.put("k", build_model("small_resnet", 3).state_dict(), {"by": "retry"})
    assert time.monotonic() - start < 60, "the retry waited for the claim to go stale"

    (tmp_path / "j.claim").write_text(f"{socket.gethostname()} {os.getpid()}")  # alive: this process
    got = []
    waiter = threading.Thread(target=lambda: got.append(_claim_result(StageCache(tmp_path, stale_after=3600), "j")))
    waiter.start()
    time.sleep(1.5)
    assert waiter.is_alive() and not got, "a live owner's claim is waited for"
    cache.put("j", build_model("small_resnet", 3).state_dict(), {"by": "owner"})
    waiter.join(timeout=30)
    assert got == [{"by": "owner"}]


def _claim_result(cache: StageCache, key: str):
    with cache.claim(key) as hit:
        return None if hit is None else hit[1]


def _entry(cache: StageCache, key: str, users: list[str], used: float) -> None:
    """Store ``key`` (a small model), used by ``users``, last used at ``used``."""
    cache.put(key, build_model("small_resnet", 3).state_dict(), {})
    for user in users:
        StageCache(cache.root, holder=user).hold(key)
        StageCache(cache.root).release(user)
    os.utime(cache.root / key / "used", (used, used))


def test_eviction_keeps_held_and_shared_entries_and_drops_the_least_recently_used(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    _entry(cache, "dense", ["t1", "t2", "t3"], used=100.0)  # shared by three trials, used longest ago
    _entry(cache, "old", ["t1"], used=200.0)
    _entry(cache, "new", ["t2"], used=300.0)
    _entry(cache, "held", ["t3"], used=50.0)
    StageCache(tmp_path, holder="running").hold("held")
    one = max(e.bytes for e in cache.entries())
    assert [e.key for e in cache.evict(2 * one, dry_run=True)] == ["old", "new"]
    assert len(cache.entries()) == 4, "a dry run removes nothing"
    assert [e.key for e in cache.evict(3 * one)] == ["old"]
    assert {e.key for e in cache.entries()} == {"dense", "new", "held"}
    assert [e.key for e in cache.evict(0)] == ["new", "dense"], "held entries stay whatever the budget"
    StageCache(tmp_path).release("running")
    assert [e.key for e in cache.evict(0)] == ["held"] and not cache.entries()
    assert [p.name for p in tmp_path.iterdir()] == [".holds"], "nothing half-evicted is left"


def test_a_budget_is_kept_after_each_write_but_never_evicts_the_entry_being_computed(tmp_path: Path) -> None:
    state = build_model("small_resnet", 3).state_dict()
    cache = StageCache(tmp_path, holder="t", max_bytes=1)
    with cache.claim("a"):
        cache.put("a", state, {})
    assert {e.key for e in cache.entries()} == {"a"}, "held by its writer"
    StageCache(tmp_path).release("t")
    with cache.claim("b"):
        cache.put("b", state, {})
    assert {e.key for e in cache.entries()} == {"b"} and cache.evicted == 1


@pytest.mark.parametrize("value, line", [({"max_gb": -1}, "cache.max_gb: Input should be greater than 0"),
                                         ({"max_mb": 1}, "cache.max_mb: unknown key")])
def test_a_bad_cache_budget_is_one_line_naming_its_key(value, line: str) -> None:
    from search.spec.load import parse_spec
    from search.spec.schema import SpecError
    from tests.tiny_spec import tiny_spec

    spec = tiny_spec("bad", trials=1, space={"order": "PA", "s2": 0.5})
    assert parse_spec(dict(spec, cache=False)).cache.enabled is False, "a bool is still accepted"
    assert parse_spec(dict(spec, cache={"max_gb": 0.5})).cache.max_bytes == 500_000_000
    with pytest.raises(SpecError) as err:
        parse_spec(dict(spec, cache=value))
    assert str(err.value).splitlines() == [line]
