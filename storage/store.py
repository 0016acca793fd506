"""The artifact store: `<root>/<stage>/<dataset>/<category>/<key>/`, local or on any fsspec filesystem.

An artifact exists if and only if its `manifest.json` exists, parses, and every file it lists has the
size it was published with; one that fails this is damaged: `realnet run` rebuilds it, `realnet status`
and `realnet tables` name it, and nothing reads it. Locally a stage writes into a hidden
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
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from .errors import LockTimeout, StoreError
from .keys import to_jsonable
from .locks import FileLock, hold_lock
from .names import safe_name
from .space import writing

MANIFEST = "manifest.json"
_RERUN_HINT = "; rerun with --rerun "
__all__ = ["MANIFEST", "ArtifactRef", "LockTimeout", "Store", "StoreError", "folder_damage", "write_json_atomic"]


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


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except (FileNotFoundError, NotADirectoryError):
        return None


def _remote_size(fs: Any, path: str) -> int | None:
    try:
        return fs.size(path)
    except FileNotFoundError:
        return None


def folder_damage(folder: str | os.PathLike) -> str | None:
    """`Store.damage` for a local artifact folder given by path (`realnet predict --model <folder>`):
    None if it has no manifest or is whole, else a sentence naming the manifest or the damaged file."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_bytes())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"artifact {folder} is damaged: its manifest {path} does not parse ({type(e).__name__}: {e})"
    for entry in files:
        size = _size(str(folder / entry["path"]))
        if size != entry.get("size", size):
            found = "is missing" if size is None else f"has {size} bytes"
            return (f"artifact {folder} is damaged: {folder / entry['path']} {found}, its manifest says "
                    f"{entry['size']} bytes")
    return None


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to a local file via temp file + fsync + os.replace: readers see old or new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    text = json.dumps(obj, indent=1, sort_keys=True)
    try:
        with writing(path, len(text.encode())), open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


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
        """True iff the artifact is complete and whole: its manifest exists and parses, and every file it
        lists is there with the size it had when published (one stat per file). A damaged artifact does
        not exist for reuse: `damage(ref)` names what is wrong with it."""
        return self.fs.exists(f"{self._folder(ref)}/{MANIFEST}") and self.damage(ref) is None

    def manifest(self, ref: ArtifactRef) -> dict[str, Any]:
        path = f"{self._folder(ref)}/{MANIFEST}"
        try:
            with self.fs.open(path, "rb") as f:
                manifest = json.load(f)
        except FileNotFoundError as e:
            raise StoreError(
                f"artifact {self._url(self._folder(ref))} is missing or incomplete (no {MANIFEST})"
            ) from e
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError: a cut or overwritten manifest
            raise StoreError(
                f"artifact {self._url(self._folder(ref))} is damaged: its manifest {self._url(path)} does not "
                f"parse ({e}){_RERUN_HINT}{ref.stage} to rebuild it"
            ) from e
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
            raise StoreError(
                f"artifact {self._url(self._folder(ref))} is damaged: its manifest {self._url(path)} has no "
                f"file list{_RERUN_HINT}{ref.stage} to rebuild it"
            )
        return manifest

    def damage(self, ref: ArtifactRef) -> str | None:
        """What is wrong with a published artifact, one sentence naming the file; None if it is whole or
        has no manifest at all (then it is simply absent). Checks that the manifest parses and that every
        file it lists exists with the size recorded: one stat per file, no content read."""
        if not self.fs.exists(f"{self._folder(ref)}/{MANIFEST}"):
            return None
        try:
            self.verify(ref)
        except StoreError as e:
            return str(e).split(_RERUN_HINT)[0]
        return None

    def root_exists(self) -> bool:
        return self.fs.exists(self._root)

    def is_folder(self) -> bool:
        return self.fs.isdir(self._root)

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
        """The whole artifact of (stage, dataset, category) with the newest manifest `created` time
        (damaged ones are skipped)."""
        refs = [r for r in self.list(stage, dataset, category) if self.damage(r) is None]
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
        for entry in self.manifest(ref)["files"]:
            path = f"{folder}/{entry['path']}"
            size = _size(path) if self.local else _remote_size(self.fs, path)
            if size != entry.get("size", size):
                found = "is missing" if size is None else f"has {size} bytes"
                raise StoreError(
                    f"artifact {self._url(folder)} is damaged: {self._url(path)} {found}, its manifest "
                    f"says {entry['size']} bytes{_RERUN_HINT}{ref.stage} to rebuild it"
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

    def _scratch_path(self, ref: ArtifactRef) -> Path:
        if self.local:
            return Path(f"{self._parent(ref)}/.partial-{safe_name(ref.key, 'key')}")
        return self._cache_base() / "scratch" / ref.stage / ref.dataset / ref.category / ref.key

    def has_progress(self, ref: ArtifactRef) -> bool:
        """Whether an unfinished build of `ref` left checkpoints or shards for a rerun to resume from."""
        path = self._scratch_path(ref)
        return path.is_dir() and any(path.iterdir())

    def scratch(self, ref: ArtifactRef) -> Path:
        """A persistent local folder where a long stage keeps checkpoints and finished shards between
        attempts. `build(ref, meta, from_scratch=True)` adopts its content as the artifact."""
        path = self._scratch_path(ref)
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
        if os.path.exists(f"{folder}/{MANIFEST}") and self.damage(ref) is None:
            return  # another writer finished first
        if os.path.lexists(folder):
            # Leftover of a crashed attempt (no manifest), or a damaged artifact. Move it aside first so
            # the rename below never sees it, then delete it at leisure: readers see the old folder or
            # none, then the new one, never a mix.
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
            if self.damage(ref) is None:
                return
            self.fs.rm_file(f"{folder}/{MANIFEST}")  # damaged: it stops existing before it is replaced
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
    def lock(
        self, ref: ArtifactRef, timeout: float | None = None, stale_after: float = 3600.0, poll: float = 0.1
    ) -> contextlib.AbstractContextManager[None]:
        """Hold `<stage>/<dataset>/<category>/.lock-<key>` while the block runs (see storage.locks)."""
        parent = self._parent(ref)
        self._makedirs(parent)
        path = f"{parent}/.lock-{safe_name(ref.key, 'key')}"
        return hold_lock(FileLock(self.fs, self.local, path, self._url(path)), timeout, stale_after, poll)
