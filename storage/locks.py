"""Artifact locks: atomic create-if-absent lock files that also work on shared and remote filesystems.

Two runs building the same artifact key take turns; different keys never block each other. A lock
whose holder provably died (a SIGKILLed run on this machine, also one in another container sharing
the lock's volume) is broken at once, so a rerun resumes without waiting; holders refresh the lock
while they hold it, so a long stage never looks dead.

On local filesystems the holder also keeps an advisory flock on the lock file. The kernel drops it
when the holder dies, whatever pid namespace it ran in, so a free flock on a complete lock proves
its holder gone where the pid rule cannot see it (GPU locks on a volume shared by containers). A
breaker removes such a lock only while holding its flock, so a live holder is never robbed, even
when its heartbeat looks stale, and two breakers never both take the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import LockTimeout, StoreError

# ---------------------------------------------------------------- is the holder alive?


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _pid_space() -> str | None:
    """This machine's boot and pid namespace: two processes with equal values see the same pids.

    Hostnames alone do not say that (containers often share one), so a dead pid only proves a dead
    lock holder when this matches too. None where /proc is unavailable (not Linux).
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return None


def _proc_start(pid: int) -> str | None:
    """Start time (clock ticks since boot) of process `pid`, to tell it from a later one reusing the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _holder_died_here(held: dict[str, Any]) -> bool:
    """True when the lock holder certainly ran in our pid namespace on this boot, and is gone."""
    space = held.get("pid_space")
    if not space or held.get("host") != socket.gethostname() or space != _pid_space():
        return False
    pid = held.get("pid")
    if not _pid_alive(pid):
        return True
    started = held.get("pid_start")
    return started is not None and _proc_start(pid) not in (None, started)  # the pid was reused


def _flock(fd: int, op: int) -> bool:
    """Take flock `op` on `fd` without waiting; False when another open file holds it, or when the
    filesystem has no flock (ENOLCK, EOPNOTSUPP: some network mounts), where the pid and age rules
    alone then decide, as before."""
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        held = json.loads(raw)
    except ValueError:
        return {}  # a holder between create and write, or one that died there; only age can clear it
    return held if isinstance(held, dict) else {}


# ---------------------------------------------------------------- the lock file


class FileLock:
    """One lock file on filesystem `fs` (`local`: the plain OS calls, which give atomic rename/link)."""

    def __init__(self, fs: Any, local: bool, path: str, url: str):
        self.fs, self.local, self.path, self.url = fs, local, path, url
        self._fd: int | None = None  # the open lock file whose flock shows we are alive

    def create(self, token: str) -> bool:
        info = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "token": token,
                "pid_space": _pid_space(), "pid_start": _proc_start(os.getpid())}
        try:
            if self.local:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                try:
                    # Flock before the body is written: checkers trust a free flock only on a body
                    # saying "flock", so none takes us for dead between the create and the flock.
                    info["flock"] = _flock(fd, fcntl.LOCK_EX)
                    os.write(fd, json.dumps(info).encode())
                except BaseException:
                    os.close(fd)
                    raise
                if info["flock"]:
                    self._fd = fd  # kept open while we hold the lock: closing it drops the flock
                else:
                    os.close(fd)
            else:
                with self.fs.open(self.path, "xb") as f:
                    f.write(json.dumps(info).encode())
            return True
        except FileExistsError:
            return False
        except OSError as e:
            raise StoreError(f"cannot create lock {self.url}: {e}") from e

    def read(self) -> tuple[dict[str, Any], float | None, bool]:
        """Lock content, age in seconds (None when the lock vanished meanwhile), and whether its
        holder certainly died (its flock is free)."""
        try:
            if self.local:
                # Body and probe on one open file, so both are one holder's. Only a body saying "flock"
                # counts: that holder flocked before writing it (older holders and filesystems without
                # flock never do, and keep the pid and age rules). Flocks belong to open files, so a
                # holder in this process is seen alive too. LOCK_SH meets the holder's LOCK_EX without
                # write access (which NFS, emulating flock, would want). The block's end drops our
                # probe before any break.
                with open(self.path, "rb") as f:
                    held, mtime = _parse(f.read()), os.fstat(f.fileno()).st_mtime
                    orphaned = held.get("flock") is True and _flock(f.fileno(), fcntl.LOCK_SH)
            else:
                with self.fs.open(self.path, "rb") as f:
                    held, mtime, orphaned = _parse(f.read()), None, False
        except FileNotFoundError:
            return {}, None, False
        # Locally the mtime is the heartbeat; remote backends get the time rewritten into the file.
        return held, time.time() - (mtime if mtime is not None else float(held.get("time", 0.0))), orphaned

    @staticmethod
    def stale(held: dict[str, Any], age: float, stale_after: float, orphaned: bool = False) -> bool:
        if orphaned or _holder_died_here(held):
            return True
        if age <= stale_after:
            return False
        if held.get("host") == socket.gethostname():
            return not _pid_alive(held.get("pid"))
        return True

    def break_(self, held: dict[str, Any]) -> bool:
        """Remove the stale lock judged from `held`; True when the lock is gone (by us or meanwhile)."""
        if not self.local:
            current, _, _ = self.read()
            if current.get("token") == held.get("token"):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self.path)
            return True
        if held.get("flock") is True:
            broken = self._break_flocked(held)
            if broken is not None:
                return broken
        # Rename first, then check we took the stale lock we judged: two breakers racing could
        # otherwise delete the fresh lock that the faster one just created. A third process can still
        # create a lock in the instant before a wrongly taken one is put back; flocked locks avoid that.
        aside = f"{self.path}.broken-{uuid.uuid4().hex}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True
        with open(aside, "rb") as f:
            taken = _parse(f.read())
        ours = taken.get("token") == held.get("token")
        if not ours:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)  # put the live lock back unless someone already holds a new one
        os.unlink(aside)
        return ours

    def _break_flocked(self, held: dict[str, Any]) -> bool | None:
        """Unlink a flocked lock while holding its flock exclusively; None where we cannot open it so.

        The flock makes us the only remover: a live holder keeps it, and a second breaker cannot take it
        until we are done, by when the path no longer names this file, which it checks. So no breaker
        ever removes a lock that someone has just taken.
        """
        try:
            fd = os.open(self.path, os.O_RDWR)  # NFS grants an exclusive flock only to a writable file
        except FileNotFoundError:
            return True
        except OSError:
            return None  # e.g. another user's lock file: the rename-aside way needs only the folder
        try:
            if not _flock(fd, fcntl.LOCK_EX):
                return False  # its holder lives after all, or another breaker is at it
            with contextlib.suppress(FileNotFoundError):
                here, mine = os.stat(self.path), os.fstat(fd)
                with os.fdopen(os.dup(fd), "rb") as f:
                    current = _parse(f.read())
                same_file = (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)
                if same_file and current.get("token") == held.get("token"):
                    os.unlink(self.path)
            return True
        finally:
            os.close(fd)

    def heartbeat(self, token: str, stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            held, _, _ = self.read()
            if held.get("token") != token:
                return
            with contextlib.suppress(OSError):
                if self.local:
                    os.utime(self.path)
                else:
                    self.fs.pipe_file(self.path, json.dumps({**held, "time": time.time()}).encode())

    def release(self, token: str) -> None:
        try:
            held, _, _ = self.read()
            if held.get("token") == token:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self.path)
        finally:
            # Only now drop the flock. Dropped first, it would let a checker break our still-present
            # lock as orphaned and a new holder create one, which our removal would then delete.
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


@contextlib.contextmanager
def hold_lock(lock: FileLock, timeout: float | None = None, stale_after: float = 3600.0, poll: float = 0.1
              ) -> Iterator[None]:
    """Hold the lock file (atomic create-if-absent) while the block runs.

    Waits while someone else holds it (raising LockTimeout after `timeout` seconds). A lock whose
    holder provably died is broken at once, so a rerun resumes without waiting: same boot and pid
    namespace with the pid gone or reused (e.g. a run killed with SIGKILL), or, on a local
    filesystem, its flock dropped by the kernel: this also catches a dead holder in another
    container on this host sharing the volume, whose pids we cannot see. Otherwise a lock older
    than `stale_after` seconds is broken when its pid is dead on this host, or when it belongs
    to another host (whose processes we cannot see). Holders refresh the lock's age while they
    hold it, so a long stage is not mistaken for a dead one.
    """
    token = uuid.uuid4().hex
    deadline = None if timeout is None else time.monotonic() + timeout
    while not lock.create(token):
        held, age, orphaned = lock.read()
        if age is not None and lock.stale(held, age, stale_after, orphaned) and lock.break_(held):
            continue
        if deadline is not None and time.monotonic() >= deadline:
            raise LockTimeout(
                f"timed out after {timeout}s waiting for lock {lock.url} held by {held}"
            )
        time.sleep(poll)
    stop = threading.Event()
    beat = threading.Thread(
        target=lock.heartbeat,
        args=(token, stop, max(0.5, min(stale_after / 4, 60.0))),
        daemon=True,
    )
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        lock.release(token)
