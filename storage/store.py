"""The artifact store: `<root>/<stage>/<dataset>/<category>/<key>/`, local or on any fsspec filesystem.

An artifact exists if and only if its `manifest.json` exists. Locally a stage writes into a hidden
sibling staging folder, the manifest goes in last and the folder is renamed into place (atomic on
one filesystem); remotely the files are uploaded first and the manifest is written last. Readers
therefore never see a half-written artifact as complete. Tasks pass `ArtifactRef`s (a few strings),
never data, between each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from .keys import to_jsonable
from .names import safe_name

MANIFEST = "manifest.json"


class StoreError(OSError):
    """A store-level failure; the message names the root or artifact concerned."""


class LockTimeout(StoreError, TimeoutError):
    """Raised by `Store.lock` when `timeout` passes while another holder keeps the lock."""


@dataclass(frozen=True)
class ArtifactRef:
    """A small, picklable, JSON-able handle on one artifact folder (`path` is a local path or URL)."""

    stage: str
    dataset: str
    category: str
    key: str
    path: str

    def file(self, name: str) -> str:
        """Path or URL of a file inside the artifact."""
        return f"{self.path.rstrip('/')}/{name}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactRef:
        return cls(**{f: str(data[f]) for f in ("stage", "dataset", "category", "key", "path")})


def _fsync_dir(path: str | os.PathLike) -> None:
    # Makes a rename durable across power loss; some filesystems refuse, which is harmless here.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to a local file via temp file + fsync + os.replace: readers see old or new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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


class Store:
    """Artifacts under `root`: a local folder or an fsspec URL (file://, memory://, s3://, gs://...)."""

    def __init__(
        self, root: str | os.PathLike = "artifacts", *, scratch_dir: str | os.PathLike | None = None
    ):
        self.root = str(root)
        self.fs, path = url_to_fs(self.root)
        self.local = isinstance(self.fs, LocalFileSystem)
        self._root = os.path.abspath(path) if self.local else path.rstrip("/")
        self._scratch_dir = Path(scratch_dir) if scratch_dir is not None else None

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # -- paths -------------------------------------------------------------------------------------
    def _join(self, *parts: str) -> str:
        return "/".join([self._root, *parts])

    def _url(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    def _parent(self, ref: ArtifactRef) -> str:
        return self._join(
            safe_name(ref.stage, "stage"),
            safe_name(ref.dataset, "dataset"),
            safe_name(ref.category, "category"),
        )

    def _folder(self, ref: ArtifactRef) -> str:
        # Recomputed from the names, not taken from ref.path: a ref may come from another machine
        # that mounts the same store elsewhere.
        return f"{self._parent(ref)}/{safe_name(ref.key, 'key')}"

    def _makedirs(self, path: str) -> None:
        try:
            self.fs.makedirs(path, exist_ok=True)
        except Exception as e:  # backends raise many types; the caller needs to know which root failed
            raise StoreError(f"cannot create {path!r} under artifact root {self.root!r}: {e}") from e

    def ref(self, stage: str, dataset: str, category: str, key: str) -> ArtifactRef:
        """The reference of an artifact (it need not exist yet)."""
        parts = (
            safe_name(stage, "stage"),
            safe_name(dataset, "dataset"),
            safe_name(category, "category"),
            safe_name(key, "key"),
        )
        return ArtifactRef(*parts, path=self._url(self._join(*parts)))

    # -- reading -----------------------------------------------------------------------------------
    def exists(self, ref: ArtifactRef) -> bool:
        """True iff the artifact is complete, i.e. its manifest exists."""
        return self.fs.exists(f"{self._folder(ref)}/{MANIFEST}")

    def manifest(self, ref: ArtifactRef) -> dict[str, Any]:
        path = f"{self._folder(ref)}/{MANIFEST}"
        try:
            with self.fs.open(path, "rb") as f:
                return json.load(f)
        except FileNotFoundError as e:
            raise StoreError(
                f"artifact {self._url(self._folder(ref))} is missing or incomplete (no {MANIFEST})"
            ) from e

    def root_exists(self) -> bool:
        return self.fs.exists(self._root)

    def has_file(self, ref: ArtifactRef, name: str) -> bool:
        return self.fs.exists(f"{self._folder(ref)}/{name}")

    def open(self, ref: ArtifactRef, name: str, mode: str = "rb") -> IO[Any]:
        """Open a file of an artifact for reading, whatever the backend."""
        return self.fs.open(f"{self._folder(ref)}/{name}", mode)

    def list(
        self, stage: str | None = None, dataset: str | None = None, category: str | None = None
    ) -> list[ArtifactRef]:
        """Complete artifacts (those with a manifest), optionally filtered, sorted by names and key."""
        if not self.fs.exists(self._root):
            return []
        levels = [(stage, "stage"), (dataset, "dataset"), (category, "category")]
        pattern = self._join(*(safe_name(v, w) if v is not None else "*" for v, w in levels), "*", MANIFEST)
        prefix = self._root.rstrip("/") + "/"
        refs = []
        for hit in self.fs.glob(pattern):
            hit = self.fs._strip_protocol(hit)
            if not hit.startswith(prefix):
                continue
            parts = hit[len(prefix) :].split("/")
            # Hidden entries are staging/scratch/lock siblings, never artifacts.
            if len(parts) != 5 or any(p.startswith(".") for p in parts[:4]):
                continue
            refs.append(ArtifactRef(*parts[:4], path=self._url(self._join(*parts[:4]))))
        return sorted(refs, key=lambda r: (r.stage, r.dataset, r.category, r.key))

    def latest(self, stage: str, dataset: str, category: str) -> ArtifactRef | None:
        """The complete artifact of (stage, dataset, category) with the newest manifest `created` time."""
        refs = self.list(stage, dataset, category)
        if not refs:
            return None
        return max(refs, key=lambda r: (datetime.fromisoformat(self.manifest(r)["created"]), r.key))

    def local_copy(self, ref: ArtifactRef, cache_dir: str | os.PathLike | None = None) -> Path:
        """A local folder with the artifact: the folder itself for local roots, else a cached download."""
        if self.local:
            self.verify(ref)  # also raises the clear "missing or incomplete" error
            return Path(self._folder(ref))
        dest = self._cache_base(cache_dir) / "artifacts" / ref.stage / ref.dataset / ref.category / ref.key
        if (dest / MANIFEST).exists():
            return dest
        manifest = self.manifest(ref)
        tmp = dest.with_name(f".tmp-{ref.key}-{uuid.uuid4().hex}")
        try:
            for entry in manifest["files"]:
                (tmp / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f"{self._folder(ref)}/{entry['path']}", str(tmp / entry["path"]))
            write_json_atomic(tmp / MANIFEST, manifest)
            with contextlib.suppress(OSError):  # a concurrent download that finished first is as good
                os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def verify(self, ref: ArtifactRef) -> None:
        """Raise StoreError naming the file if any file listed in the manifest is missing or has
        another size than when it was published (a truncated copy, a disk that filled up...).
        Costs one stat per file, so every stage checks its upstream artifacts before reading them."""
        folder = self._folder(ref)
        for entry in self.manifest(ref).get("files", []):
            path = f"{folder}/{entry['path']}"
            try:
                size = self.fs.size(path)
            except FileNotFoundError:
                size = None
            if size != entry.get("size", size):
                found = "is missing" if size is None else f"has {size} bytes"
                raise StoreError(
                    f"artifact {self._url(folder)} is damaged: {self._url(path)} {found}, its manifest "
                    f"says {entry['size']} bytes; rerun with --rerun {ref.stage} to rebuild it"
                )

    def remove(self, ref: ArtifactRef) -> None:
        """Delete an artifact (for a forced rerun): the manifest goes first, so it stops existing at once."""
        folder = self._folder(ref)
        if self.fs.exists(f"{folder}/{MANIFEST}"):
            self.fs.rm_file(f"{folder}/{MANIFEST}")
        if self.fs.exists(folder):
            self.fs.rm(folder, recursive=True)

    # -- writing -----------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Create and remove a probe file under the root; raise StoreError naming the root if that fails."""
        probe = self._join(f".probe-{uuid.uuid4().hex}")
        try:
            self.fs.makedirs(self._root, exist_ok=True)
            self.fs.pipe_file(probe, b"probe")
            self.fs.rm_file(probe)
        except Exception as e:
            raise StoreError(f"artifact root {self.root!r} is not writable: {e}") from e

    def _cache_base(self, cache_dir: str | os.PathLike | None = None) -> Path:
        base = cache_dir or self._scratch_dir or os.environ.get("REALNET_SCRATCH")
        base = Path(base) if base else Path.home() / ".cache" / "realnet"
        return base / hashlib.sha256(self.root.encode()).hexdigest()[:12]

    def scratch(self, ref: ArtifactRef) -> Path:
        """A persistent local folder where a long stage keeps checkpoints and finished shards between
        attempts. `build(ref, meta, from_scratch=True)` adopts its content as the artifact."""
        if self.local:
            path = Path(f"{self._parent(ref)}/.partial-{safe_name(ref.key, 'key')}")
        else:
            path = self._cache_base() / "scratch" / ref.stage / ref.dataset / ref.category / ref.key
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create scratch folder {path} for artifact root {self.root!r}: {e}"
            ) from e
        return path

    def clear_scratch(self, ref: ArtifactRef) -> None:
        """Forget a stage's partial progress (for a forced rerun from zero)."""
        shutil.rmtree(self.scratch(ref), ignore_errors=True)

    @contextlib.contextmanager
    def build(
        self,
        ref: ArtifactRef,
        meta: dict[str, Any] | None = None,
        *,
        from_scratch: bool = False,
        checksums: bool = False,
    ) -> Iterator[Path]:
        """Yield a local staging folder; on a clean exit publish it as the artifact `ref`.

        On an exception nothing is published and the staging folder is deleted (the scratch folder,
        with `from_scratch=True`, is kept: it is what the next attempt resumes from). If another
        writer published `ref` first, theirs is kept: same key means same content.
        `checksums=True` records each file's sha256 in the manifest (costs a full read).
        """
        meta = to_jsonable(meta or {})  # fail now, not after hours of work
        if from_scratch:
            staging = self.scratch(ref)
        elif self.local:
            self._makedirs(self._parent(ref))
            staging = Path(f"{self._parent(ref)}/.tmp-{ref.key}-{uuid.uuid4().hex}")
            staging.mkdir()
        else:
            staging = Path(tempfile.mkdtemp(prefix=f"realnet-{ref.key}-"))
        try:
            yield staging
            if from_scratch:
                # Temp files of atomic writes that a killed attempt left behind (save_checkpoint,
                # write_table, ShardProgress all write `*.tmp` then rename) are not part of the artifact.
                for junk in staging.rglob("*.tmp"):
                    if junk.is_file():
                        junk.unlink()
            manifest = self._manifest_for(ref, meta, staging, checksums)
            if self.local:
                self._publish_local(ref, staging, manifest)
            else:
                self._publish_remote(ref, staging, manifest)
        except BaseException:
            if not from_scratch:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(staging, ignore_errors=True)

    def _manifest_for(self, ref: ArtifactRef, meta: Any, staging: Path, checksums: bool) -> dict[str, Any]:
        files = []
        for p in sorted(q for q in staging.rglob("*") if q.is_file()):
            rel = p.relative_to(staging).as_posix()
            if rel == MANIFEST:
                continue
            entry: dict[str, Any] = {"path": rel, "size": p.stat().st_size}
            if checksums:
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 20), b""):
                        h.update(block)
                entry["sha256"] = h.hexdigest()
            files.append(entry)
        return {
            "stage": ref.stage,
            "dataset": ref.dataset,
            "category": ref.category,
            "key": ref.key,
            "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "host": socket.gethostname(),
            "meta": meta,
            "files": files,
        }

    def _publish_local(self, ref: ArtifactRef, staging: Path, manifest: dict[str, Any]) -> None:
        folder = self._folder(ref)
        self._makedirs(self._parent(ref))
        # The manifest goes into the staging folder; it becomes visible only with the rename below.
        write_json_atomic(staging / MANIFEST, manifest)
        if os.path.exists(f"{folder}/{MANIFEST}"):
            return  # another writer finished first
        if os.path.lexists(folder):
            # Leftover of a crashed attempt (no manifest). Move it aside first so the rename below
            # never sees it, then delete it at leisure.
            trash = f"{self._parent(ref)}/.trash-{ref.key}-{uuid.uuid4().hex}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(staging, folder)
        except OSError as e:
            if os.path.exists(f"{folder}/{MANIFEST}"):
                return  # lost a race against an identical writer
            raise StoreError(f"cannot move {staging} into place at {folder}: {e}") from e
        _fsync_dir(self._parent(ref))

    def _publish_remote(self, ref: ArtifactRef, staging: Path, manifest: dict[str, Any]) -> None:
        folder = self._folder(ref)
        if self.fs.exists(f"{folder}/{MANIFEST}"):
            return
        if self.fs.exists(folder):
            self.fs.rm(folder, recursive=True)  # crashed upload without a manifest
        try:
            for entry in manifest["files"]:
                target = f"{folder}/{entry['path']}"
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                self.fs.put_file(str(staging / entry["path"]), target)
            # Last: until this single-object write lands, the artifact does not exist.
            self.fs.pipe_file(f"{folder}/{MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True).encode())
        except Exception as e:
            raise StoreError(f"cannot upload artifact to {self._url(folder)}: {e}") from e

    # -- locking -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(
        self, ref: ArtifactRef, timeout: float | None = None, stale_after: float = 3600.0, poll: float = 0.1
    ) -> Iterator[None]:
        """Hold `<stage>/<dataset>/<category>/.lock-<key>` (atomic create-if-absent) while the block runs.

        Waits while someone else holds it (raising LockTimeout after `timeout` seconds). A lock whose
        holder provably died (same boot and pid namespace, pid gone or reused: e.g. a run killed
        with SIGKILL) is broken at once, so a rerun resumes without waiting. Otherwise a lock older
        than `stale_after` seconds is broken when its pid is dead on this host, or when it belongs
        to another host (whose processes we cannot see). Holders refresh the lock's age while they
        hold it, so a long stage is not mistaken for a dead one.
        """
        parent = self._parent(ref)
        path = f"{parent}/.lock-{safe_name(ref.key, 'key')}"
        token = uuid.uuid4().hex
        self._makedirs(parent)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._lock_create(path, token):
            held, age = self._lock_read(path)
            if age is not None and self._lock_stale(held, age, stale_after):
                self._lock_break(path, held)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(
                    f"timed out after {timeout}s waiting for lock {self._url(path)} held by {held}"
                )
            time.sleep(poll)
        stop = threading.Event()
        beat = threading.Thread(
            target=self._lock_heartbeat,
            args=(path, token, stop, max(0.5, min(stale_after / 4, 60.0))),
            daemon=True,
        )
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            held, _ = self._lock_read(path)
            if held.get("token") == token:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(path)

    def _lock_create(self, path: str, token: str) -> bool:
        info = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "token": token,
                "pid_space": _pid_space(), "pid_start": _proc_start(os.getpid())}
        data = json.dumps(info).encode()
        try:
            if self.local:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            else:
                with self.fs.open(path, "xb") as f:
                    f.write(data)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            raise StoreError(f"cannot create lock {self._url(path)}: {e}") from e

    def _lock_read(self, path: str) -> tuple[dict[str, Any], float | None]:
        """Lock content and age in seconds; age None when the lock vanished meanwhile."""
        try:
            with self.fs.open(path, "rb") as f:
                raw = f.read()
            mtime = os.stat(path).st_mtime if self.local else None
        except FileNotFoundError:
            return {}, None
        try:
            held = json.loads(raw)
        except ValueError:
            held = {}  # a holder that died between create and write; only age can clear it
        # Locally the mtime is the heartbeat; remote backends get the time rewritten into the file.
        return held, time.time() - (mtime if mtime is not None else float(held.get("time", 0.0)))

    @staticmethod
    def _lock_stale(held: dict[str, Any], age: float, stale_after: float) -> bool:
        if _holder_died_here(held):
            return True
        if age <= stale_after:
            return False
        if held.get("host") == socket.gethostname():
            return not _pid_alive(held.get("pid"))
        return True

    def _lock_break(self, path: str, held: dict[str, Any]) -> None:
        if not self.local:
            current, _ = self._lock_read(path)
            if current.get("token") == held.get("token"):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(path)
            return
        # Rename first, then check we took the stale lock we judged: two breakers racing could
        # otherwise delete the fresh lock that the faster one just created.
        aside = f"{path}.broken-{uuid.uuid4().hex}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        try:
            with open(aside, "rb") as f:
                taken = json.loads(f.read() or b"{}")
        except ValueError:
            taken = {}
        if taken.get("token") != held.get("token"):
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)  # put the live lock back unless someone already holds a new one
        os.unlink(aside)

    def _lock_heartbeat(self, path: str, token: str, stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            held, _ = self._lock_read(path)
            if held.get("token") != token:
                return
            with contextlib.suppress(OSError):
                if self.local:
                    os.utime(path)
                else:
                    self.fs.pipe_file(path, json.dumps({**held, "time": time.time()}).encode())
