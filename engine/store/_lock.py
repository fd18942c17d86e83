"""One writer per results folder: a lock that a killed process cannot leave stuck.

Local disks and NFS: the lock is the folder ``DIR/.rashomon-lock``, made with ``mkdir``, which is
atomic on NFS too (``O_EXCL`` is not, on older clients); its ``owner.json`` says who holds it.
Object stores have no mkdir, no rename and (in pyarrow) no conditional put: each contender writes
its own lease ``DIR/.rashomon-lock/<token>.json``, then lists the leases (listing is strongly
consistent on S3 and GCS) and holds the lock only if it sees no other live lease. Of two contenders
the one that lists last sees the other's lease, so at most one wins; when both see each other they
withdraw and retry after a random pause, and a lease marked ``held`` refuses newcomers at once.

A driver thread refreshes the owner's heartbeat. A lock is stale when its owner is gone: on the
same host, its process no longer exists; from another host, its heartbeat is older than
``STALE_AFTER`` (the hosts' clocks are assumed to agree within a minute, as NTP keeps them). A
stale lock is taken over. An owner whose lock was taken (its heartbeat found it gone) learns it
from `FolderLock.check` and stops writing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import pyarrow.fs as pafs

from rashomon.engine.store._location import delete, list_files, put
from rashomon.jobs import UserError

LOCK_NAME = ".rashomon-lock"
HEARTBEAT = 10.0  # seconds between refreshes of the owner's record
STALE_AFTER = 120.0  # seconds without a heartbeat after which another host's lock is stale
WAIT = 15.0  # seconds to wait out a lock being taken or handed over before refusing
_OWNER_FILE = "owner.json"
_TOKEN = re.compile(r"[0-9a-f]{32}")


def _host() -> tuple[str, str]:
    """This machine's name, and its pid namespace: containers that share a host name differ."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return socket.gethostname(), namespace


def _process_started(pid: int) -> float | None:
    """When process ``pid`` started (to tell a reused pid), or None if there is none."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:  # exists, but hidden from us: assume it is the same process
        return float("nan")


@dataclass(frozen=True)
class Owner:
    """Who holds (or claims) a lock: enough to name it to a user and to tell whether it lives."""

    token: str
    host: str
    namespace: str
    pid: int
    started: float
    purpose: str
    since: float
    heartbeat: float
    state: str = "held"  # or "claiming": a lease that has not yet seen itself alone

    @classmethod
    def of_this_process(cls, purpose: str) -> Owner:
        host, namespace = _host()
        now = time.time()
        started = _process_started(os.getpid()) or now
        return cls(uuid.uuid4().hex, host, namespace, os.getpid(), started, purpose, now, now)

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> Owner | None:
        """The record, or None when it is not one of ours (damaged, or half written)."""
        try:
            fields = data if isinstance(data, dict) else json.loads(data)
            owner = cls(**fields)
        except (TypeError, ValueError):
            return None
        numbers = (owner.pid, owner.started, owner.since, owner.heartbeat)
        return owner if all(isinstance(n, int | float) for n in numbers) else None

    def record(self) -> dict:
        return asdict(self)

    def to_json(self) -> bytes:
        return json.dumps(self.record()).encode()

    def alive(self) -> bool:
        """On this host: its process exists. Elsewhere: its heartbeat is recent."""
        if (self.host, self.namespace) == _host():
            started = _process_started(self.pid)
            return started is not None and not abs(started - self.started) > 1.0
        return time.time() - self.heartbeat < STALE_AFTER

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        age = max(0.0, time.time() - self.heartbeat)
        return (
            f"{self.purpose} on {self.host}, pid {self.pid}, since {since}, "
            f"last heartbeat {age:.0f} s ago"
        )


class FolderLock:
    """Held for a whole run (`ResultsDir.lock`): ``with results.lock("run of x"): ...``."""

    def __init__(self, filesystem: pafs.FileSystem, root: str, location: str, purpose: str):
        self.filesystem, self.root, self.location = filesystem, root, location
        self.folder = f"{root}/{LOCK_NAME}"
        self.me = Owner.of_this_process(purpose)
        self.lost = ""  # why this process no longer holds the lock, once it does not
        self._local = isinstance(filesystem, pafs.LocalFileSystem)
        self._listeners: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if self._local:
            self._acquire_directory()
        else:
            self._acquire_lease()
        self._thread = threading.Thread(target=self._beat, name="rashomon-lock", daemon=True)
        self._thread.start()

    def holder(self) -> Owner | None:
        """The live holder of the lock, if any (for ``status``)."""
        if self._local:
            owners = [self._read_owner(self.folder)[0]]
        else:
            owners = [o for o in self.leases() if o.state == "held"]
        return next((o for o in owners if o is not None and o.alive()), None)

    def on_heartbeat(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` now and with every heartbeat (e.g. to mark a study's driver alive)."""
        listener()
        self._listeners.append(listener)

    def check(self) -> None:
        """Raise if another process has taken this lock over: this one must stop writing."""
        if self.lost:
            raise UserError(
                f"{self.location}: this process lost the folder's lock ({self.lost}); another "
                "rashomon process writes here now; let it finish, then run again to resume"
            )

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost:
            return
        with contextlib.suppress(OSError):
            if self._local:
                owner = self._read_owner(self.folder)[0]
                if owner is not None and owner.token == self.me.token:
                    self._remove_directory(self.folder)
            else:
                delete(self.filesystem, self._lease_path(self.me.token))

    def _refusal(self, owner: Owner) -> UserError:
        return UserError(
            f"{self.location}: another rashomon process is writing to this results folder "
            f"({owner.describe()}); let it finish or stop it, then run again (the lock of a "
            f"killed process is taken over: at once on its own host, from other hosts after "
            f"{STALE_AFTER:.0f} s without a heartbeat)"
        )

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                self._refresh()
            except Exception:  # a storage hiccup: the next beat tries again
                continue
            if self.lost:
                return
            for listener in self._listeners:
                with contextlib.suppress(Exception):
                    listener()

    def _refresh(self) -> None:
        self.me = replace(self.me, heartbeat=time.time())
        if self._local:
            found, _ = self._read_owner(self.folder)
            path = f"{self.folder}/{_OWNER_FILE}"
        else:
            found = self._read_lease(self._lease_path(self.me.token))
            path = self._lease_path(self.me.token)
        if found is None or found.token != self.me.token:
            self.lost = f"taken over by {found.describe()}" if found else "its record is gone"
            return
        put(self.filesystem, path, self.me.to_json())

    # --- local disks and NFS: mkdir ----------------------------------------------------------

    def _acquire_directory(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        deadline = time.monotonic() + 2 * WAIT
        while time.monotonic() < deadline:
            try:
                os.mkdir(self.folder)
            except FileExistsError:
                owner, age = self._read_owner(self.folder)
                if owner is None and age is not None and age < WAIT:
                    time.sleep(0.1)  # being created: its owner record follows
                elif owner is not None and owner.alive():
                    raise self._refusal(owner) from None
                else:
                    self._take_over()
                continue
            with contextlib.suppress(FileNotFoundError):  # taken over in between: try again
                put(self.filesystem, f"{self.folder}/{_OWNER_FILE}", self.me.to_json())
                owner = self._read_owner(self.folder)[0]
                if owner is not None and owner.token == self.me.token:
                    return
        raise UserError(
            f"{self.location}: cannot take the folder's lock {self.folder} (it keeps changing "
            "hands); make sure no other rashomon process writes here, then run again"
        )

    def _read_owner(self, folder: str) -> tuple[Owner | None, float | None]:
        """The lock's owner, and how old the record (or the bare folder) is: None if gone."""
        path = f"{folder}/{_OWNER_FILE}"
        try:
            with open(path, "rb") as stream:
                data = stream.read()
            return Owner.from_json(data), time.time() - os.stat(path).st_mtime
        except FileNotFoundError:
            with contextlib.suppress(FileNotFoundError):
                return None, time.time() - os.stat(folder).st_mtime
            return None, None

    def _take_over(self) -> None:
        """Move the stale lock aside (rename is atomic: one contender wins) and remove it."""
        aside = f"{self.folder}.stale.{self.me.token}"
        try:
            os.rename(self.folder, aside)
        except OSError:
            return  # another contender moved it first
        # If the lock changed hands since it was read, its new owner loses it: its heartbeat
        # finds its record gone and `check` stops it.
        self._remove_directory(aside)

    def _remove_directory(self, folder: str) -> None:
        """Remove a lock folder: its owner record and the temporaries `put` leaves, nothing else."""
        for entry in os.listdir(folder):
            if entry == _OWNER_FILE or entry.startswith(f".{_OWNER_FILE}."):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{folder}/{entry}")
        with contextlib.suppress(OSError):
            os.rmdir(folder)

    # --- object stores: leases ---------------------------------------------------------------

    def _lease_path(self, token: str) -> str:
        return f"{self.folder}/{token}.json"

    def _acquire_lease(self) -> None:
        deadline = time.monotonic() + WAIT
        self.me = replace(self.me, state="claiming")
        for attempt in itertools.count():
            began = time.monotonic()
            put(self.filesystem, self._lease_path(self.me.token), self.me.to_json())
            others = [o for o in self.leases() if o.token != self.me.token]
            live = [o for o in others if o.alive()]
            if not live:
                self.me = replace(self.me, state="held")
                put(self.filesystem, self._lease_path(self.me.token), self.me.to_json())
                for stale in others:
                    delete(self.filesystem, self._lease_path(stale.token))
                return
            delete(self.filesystem, self._lease_path(self.me.token))
            held = [o for o in live if o.state == "held"]
            if held or time.monotonic() > deadline:
                raise self._refusal((held or live)[0])
            # contenders that saw each other retry at random times, spread over more and more
            # rounds of this storage's latency, until one finds itself alone
            rounds = 2 ** min(attempt + 1, 5)
            time.sleep(random.uniform(0, rounds * max(time.monotonic() - began, 0.01)))

    def leases(self) -> list[Owner]:
        """Every lease in the lock folder; one that cannot be read counts from its upload time."""
        found = []
        for info in list_files(self.filesystem, self.folder):
            token = info.base_name.removesuffix(".json")
            if not _TOKEN.fullmatch(token) or token == info.base_name:
                continue  # not a lease of ours
            try:
                owner = self._read_lease(info.path)
            except OSError:  # being replaced or deleted right now
                owner = None
            if owner is None or owner.token != token:  # counts as long as a heartbeat would
                when = info.mtime.timestamp() if info.mtime else 0.0
                owner = Owner(token, "?", "", -1, 0.0, "unknown writer", when, when, "claiming")
            found.append(owner)
        return found

    def _read_lease(self, path: str) -> Owner | None:
        try:
            with self.filesystem.open_input_stream(path) as stream:
                return Owner.from_json(stream.read())
        except FileNotFoundError:
            return None
