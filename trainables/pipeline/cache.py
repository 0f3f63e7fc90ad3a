"""Content-addressed cache of stage outputs.

An entry's key is the SHA-256 of (stage config, input artifact hash, data spec, seed, and for a
stage that distills its teacher's content hash), so trials that share a prefix (the dense pretrain,
a ``PB`` pruning to 50%) compute it once. An entry is a folder ``<root>/<key>/`` holding ``model.pt`` (the output state dict) and ``meta.json`` (its
content hash and the stage's metrics). Entries are written to a temporary folder and renamed into
place, so a reader sees a whole entry or none; a corrupt or truncated entry fails its content-hash
check on read, is removed, and the stage is recomputed.

**Holds and the budget.** A trial that uses an entry (reads it, writes it, or refers to it from its
stage checkpoint) holds it: its key is a line of ``<root>/.holds/<holder>``, a file only that trial
appends to and that the driver removes once the trial's final result is recorded
(:meth:`StageCache.release`). With ``max_bytes`` the cache evicts entries past the budget after each
write (:meth:`StageCache.evict`): never a held or claimed one; the ones used by the fewest trials go
first (a shared prefix such as the dense stage is kept longest), and among those the least recently
used (``<entry>/used``, touched on every read). Each trial that uses an entry leaves an empty file
``<entry>/users/<holder>``, so counting users needs no lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict (independent of file format)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def stage_key(config: Any, input_hash: str | None, data: Any, seed: int | None, *, teacher: str | None = None) -> str:
    """The cache key of a stage: SHA-256 of its canonical JSON description.

    ``seed``: the plan's seed, or None for a stage whose output does not depend on it
    (:attr:`~trainables.pipeline.plan._Step.seeded` False), so runs of every seed share its entry.

    ``teacher``: the content hash of the teacher a distilling stage learns from (its output depends
    on it as on its input); None, for every stage that does not distill, leaves the key as it was
    before distillation existed.
    """
    described = {"config": config, "input": input_hash, "data": data, "seed": seed}
    if teacher is not None:
        described["teacher"] = teacher
    payload = json.dumps(described, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class StageCache:
    """Stage outputs stored by key under ``root`` (a shared path on a cluster).

    Concurrent trials that miss the same key do not all compute it: :meth:`claim` lets one trial
    compute while the others wait for its entry (see :meth:`claim`).

    Args:
        root: the cache folder.
        stale_after: seconds after which a claim whose owner stopped refreshing it is abandoned.
    """

    def __init__(self, root: str | Path, stale_after: float = 60.0, *, holder: str | None = None,
                 max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.stale_after = stale_after
        self.holder = holder
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.evicted = 0

    @property
    def holds(self) -> Path:
        """The folder of hold files, one per holder (a trial)."""
        return self.root / HOLDS

    def hold(self, key: str) -> None:
        """Record that this cache's ``holder`` uses entry ``key`` (nothing without a holder).

        Appends the key to the holder's hold file (one writer per file: no lock needed) and marks
        the holder as a user of the entry, and touches the entry's last use.
        """
        if self.holder is None:
            return
        self.holds.mkdir(parents=True, exist_ok=True)
        with open(self.holds / self.holder, "a") as f:
            f.write(key + "\n")
        entry = self.root / key
        try:
            (entry / USERS).mkdir(exist_ok=True)
            (entry / USERS / self.holder).touch()
            (entry / USED).touch()
        except FileNotFoundError:
            pass  # evicted or never stored: the hold still keeps a later store of it

    def release(self, holder: str) -> None:
        """Drop every hold of ``holder`` (its final result is recorded)."""
        (self.holds / holder).unlink(missing_ok=True)

    def held(self) -> set[str]:
        """Keys some holder holds, and keys a trial is computing (a ``.claim`` file)."""
        keys = {p.name[: -len(".claim")] for p in self.root.glob("*.claim")}
        for path in self.holds.glob("*") if self.holds.is_dir() else ():
            try:
                keys.update(line for line in path.read_text().split() if line)
            except FileNotFoundError:
                continue
        return keys

    def entries(self) -> list[CacheEntry]:
        """Every finished entry: its key, bytes, users and last use (temporary folders left out)."""
        found = []
        for entry in self.root.iterdir() if self.root.is_dir() else ():
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            try:
                size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
                users = len(list((entry / USERS).iterdir())) if (entry / USERS).is_dir() else 0
                used = max((f.stat().st_mtime for f in (entry / USED, entry / "meta.json") if f.exists()), default=0.0)
            except FileNotFoundError:
                continue  # evicted meanwhile
            found.append(CacheEntry(entry.name, size, users, used))
        return found

    def evict(self, max_bytes: int | None = None, *, dry_run: bool = False) -> list[CacheEntry]:
        """Remove entries until the cache holds at most ``max_bytes`` (default: this cache's budget).

        Held and claimed entries stay whatever the budget; of the others, the ones with the fewest
        users go first, least recently used first among equals. Returns the entries removed (with
        ``dry_run``, the ones that would be). An entry is renamed away before it is deleted, so a
        reader sees it whole or not at all (a read that loses the race recomputes the stage).
        """
        budget = self.max_bytes if max_bytes is None else max_bytes
        if budget is None:
            return []
        entries = self.entries()
        total = sum(e.bytes for e in entries)
        held = self.held()
        removed = []
        for entry in sorted((e for e in entries if e.key not in held), key=lambda e: (e.users, e.used)):
            if total <= budget:
                break
            if not dry_run:
                gone = self.root / f".evicted-{entry.key[:12]}-{os.getpid()}-{threading.get_ident()}"
                try:
                    os.rename(self.root / entry.key, gone)
                except OSError:
                    continue  # evicted by another trial meanwhile
                shutil.rmtree(gone, ignore_errors=True)
                self.evicted += 1
            total -= entry.bytes
            removed.append(entry)
        return removed

    def get(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], str] | None:
        """``(state_dict, metrics, content_hash)`` of entry ``key``, or None (missing or corrupt)."""
        found = self._read(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def has(self, key: str) -> bool:
        """Whether entry ``key`` is stored (its ``meta.json`` and ``model.pt`` are there), without
        reading it: no hit or miss is counted, nothing held. An entry found may still be evicted, or
        fail its content-hash check on read, before it is used."""
        entry = self.root / key
        return (entry / "meta.json").is_file() and (entry / "model.pt").is_file()

    def _read(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], str] | None:
        entry = self.root / key
        try:
            meta = json.loads((entry / "meta.json").read_text())
            state = torch.load(entry / "model.pt", map_location="cpu", weights_only=True)
            if state_hash(state) != meta["sha256"]:
                raise ValueError("content hash mismatch")
        except FileNotFoundError:
            return None
        except Exception:  # truncated, garbled or tampered with: drop it and recompute
            shutil.rmtree(entry, ignore_errors=True)
            return None
        self.hold(key)
        return state, meta["metrics"], meta["sha256"]

    def put(self, key: str, state: Mapping[str, torch.Tensor], metrics: Mapping[str, Any]) -> str:
        """Store an entry atomically; returns its content hash. An entry already there is kept."""
        digest = state_hash(state)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=self.root))
        try:
            torch.save(dict(state), tmp / "model.pt")
            (tmp / "meta.json").write_text(json.dumps({"sha256": digest, "metrics": dict(metrics)}))
            # A folder rename, not trainables.files.atomic_path: the entry's two files must appear
            # together, and renaming onto another trial's finished entry (a non-empty folder) fails
            # instead of replacing it, which is what lets the first writer win.
            os.rename(tmp, self.root / key)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (self.root / key).is_dir():
                raise
            # another trial stored the same key first: theirs is as good as ours
        self.hold(key)
        if self.max_bytes is not None:
            self.evict()
        return digest

    @contextmanager
    def claim(self, key: str) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, Any], str] | None]:
        """Get entry ``key``, or the right to compute it.

        Yields the entry if it exists or appears while waiting for another trial that claimed it;
        otherwise yields None, and the caller computes the stage and :meth:`put`\ s it inside the
        block. A claim is a ``<key>.claim`` file created exclusively (``O_EXCL``, atomic on local
        and NFS v3+ file systems), holding its owner's host name and process id, and touched every
        few seconds while held. It is taken over when its owner is a process of this host that no
        longer exists (a retried trial after a crash does not wait), or when it has not been
        touched for ``stale_after`` seconds (an owner on another host died).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / f"{key}.claim"
        while True:
            found = self._read(key)
            if found is not None:
                self.hits += 1
                yield found
                return
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._abandoned(marker):
                    time.sleep(0.5)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()}")
            break
        self.misses += 1
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(marker, stop), daemon=True)
        beat.start()
        try:
            yield None
        finally:
            stop.set()
            beat.join()
            marker.unlink(missing_ok=True)

    def _abandoned(self, marker: Path) -> bool:
        """Remove ``marker`` if its owner is gone or it went stale; True if the claim is free to try.

        The claim removed is the one judged: a new claim that another waiter made in between
        (another file, so another inode) is left alone.
        """
        try:
            judged = marker.stat()
        except FileNotFoundError:
            return True  # released meanwhile
        if time.time() - judged.st_mtime <= self.stale_after and not _owner_gone(marker):
            return False
        try:
            if marker.stat().st_ino == judged.st_ino:
                marker.unlink()
        except FileNotFoundError:
            pass
        return True

    def _heartbeat(self, marker: Path, stop: threading.Event) -> None:
        while not stop.wait(min(5.0, self.stale_after / 4)):
            try:
                os.utime(marker)
            except FileNotFoundError:
                return


HOLDS = ".holds"  # the folder of hold files under the cache root
USERS = "users"  # an entry's folder of user marks
USED = "used"  # an entry's last-use mark (its mtime)


@dataclass(frozen=True)
class CacheEntry:
    """One finished cache entry: ``key``, its ``bytes`` on disk, how many trials used it, and its
    last use (seconds since the epoch)."""

    key: str
    bytes: int
    users: int
    used: float


def _owner_gone(marker: Path) -> bool:
    """The claim's owner was a process of this host that has exited (a crashed trial's claim).

    False when the owner is on another host, still runs, or the file is not readable yet (created
    but not written): those claims wait for ``stale_after``. A reused process id reads as alive,
    which only makes the wait the longer one.
    """
    try:
        host, pid = marker.read_text().split()
        if host == socket.gethostname():
            os.kill(int(pid), 0)  # signal 0 only asks whether the process exists
        return False
    except ProcessLookupError:
        return True
    except (OSError, ValueError):  # gone meanwhile, half written, or another user's live process
        return False
