"""Tenant-owned model files, sealed at rest with the tenant's data key.

A tenant's model may be trained on, or be, that tenant's data, so its files never sit in
the clear. Sealing turns a Hugging Face-format directory into ordinary tenant blobs
(:class:`appliance.crypto.blobs.BlobStore`, streaming AES-256-GCM under the tenant's DEK):
one ``model-file`` blob per file plus one ``model-manifest`` blob listing each file's
relative path, size, SHA-256 of its plaintext and blob id. The registry records the model
as ``sealed:<manifest blob id>``. Because the pieces are ordinary blobs, key rotation
re-encrypts them, tenant deletion shreds them, and another tenant's id never opens them.

Loading writes no plaintext to any filesystem: :meth:`SealedModels.open` decrypts each file
into an anonymous memory file (``memfd_create``, Linux), checks it against the manifest,
seals it read-only, and yields a private temporary directory that holds only symlinks to
``/proc/self/fd/<n>``. transformers, sentence-transformers, tokenizers and safetensors
follow those links like ordinary files (safetensors even memory-maps them). The directory
and the descriptors go away when the block ends; weights the loader mapped stay valid for
as long as the model lives, and their pages can still reach swap like any process memory.

What is sealed: every regular file under the directory except snapshot baggage no loader
reads: ``.git/``, ``.cache/``, ``onnx/`` and ``openvino/`` directories, ``.gitattributes``
files, and, in a directory that holds ``.safetensors`` weights, the same weights in other
formats (``*.bin``, ``*.pt``, ``*.h5``, ``*.msgpack``, ``*.ot``). Every other file is kept
(tokenizers, ``modules.json``, ``1_Pooling/config.json``, ...). A file symlink is followed
only when it resolves inside the directory or, for a Hugging Face cache snapshot
(``<repo>/snapshots/<rev>/``), inside that repo's ``blobs/``. At most :data:`MAX_FILES`
files, because loading holds one descriptor per file.

Sealing is all or nothing: if any file fails, every blob written so far is deleted. A
process killed mid-way can leave unreferenced blobs and, in the tenant's blob directory,
a temp file or a blob file whose row was never committed; they are sealed, counted by key
rotation and removed with the tenant, and :meth:`SealedModels.sweep` deletes them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from appliance.crypto.blobs import BlobStore
from appliance.db.base import utcnow
from appliance.errors import ConfigError, IntegrityError, InvalidInput, KeyUnavailable, NotFound, NotSupportedYet

log = logging.getLogger(__name__)

SEALED_SCHEME = "sealed:"
"""Registry sources of sealed models: ``sealed:<manifest blob id>``."""
MANIFEST_KIND = "model-manifest"
FILE_KIND = "model-file"
MANIFEST_FORMAT = 1
MAX_FILES = 512
"""Loading holds one descriptor per file: stay well below the common default limit of 1024."""
SKIPPED_DIRS = frozenset({".git", ".cache", "onnx", "openvino"})
SKIPPED_FILES = frozenset({".gitattributes"})
DUPLICATE_WEIGHTS = (".bin", ".pt", ".h5", ".msgpack", ".ot")
"""Weight formats skipped in a directory that has ``.safetensors`` weights (loaders prefer those)."""
MEMFD_NAME = "appliance-model"
"""Every memory file's name (the kernel caps names at 249 bytes; the real path is the symlink's)."""
_CHUNK = 1 << 20
_SEALS = getattr(fcntl, "F_SEAL_WRITE", 8) | getattr(fcntl, "F_SEAL_GROW", 4) | getattr(fcntl, "F_SEAL_SHRINK", 2)


def is_sealed(source: str) -> bool:
    return source.startswith(SEALED_SCHEME)


@dataclass(frozen=True)
class SealedFile:
    path: str
    """Relative, ``/``-separated."""
    size: int
    sha256: str
    blob: str


@dataclass(frozen=True)
class Bundle:
    manifest: str
    files: tuple[SealedFile, ...]

    @property
    def blob_ids(self) -> list[str]:
        return [self.manifest, *(f.blob for f in self.files)]


def _manifest_id(source: str) -> str:
    if not is_sealed(source):
        raise InvalidInput("not a sealed model source")
    return source[len(SEALED_SCHEME) :]


def _relative(path: str) -> PurePosixPath:
    """A manifest path as a safe relative path (the manifest is authenticated; this is depth)."""
    rel = PurePosixPath(path)
    if not path or rel.is_absolute() or any(p in ("", ".", "..") for p in path.split("/")) or "\0" in path:
        raise IntegrityError("sealed model manifest is malformed")
    return rel


def _link_roots(source: Path) -> list[Path]:
    """Where a file symlink in ``source`` (resolved) may point: inside it, and for a Hugging Face
    cache snapshot (``<repo>/snapshots/<rev>``) inside ``<repo>/blobs``."""
    roots = [source]
    blobs = source.parent.parent / "blobs"
    if source.parent.name == "snapshots" and blobs.is_dir() and not blobs.is_symlink():
        roots.append(blobs)
    return roots


def _files_of(source: Path) -> list[tuple[str, Path]]:
    """The files to seal under ``source`` (see the module docstring for what is skipped),
    as (relative path, the path to read)."""
    root = source.resolve()
    roots = _link_roots(root)
    found: list[tuple[str, Path]] = []
    for top, dirs, files in os.walk(root, followlinks=False):
        here = Path(top)
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for d in dirs:
            if (here / d).is_symlink():
                rel_dir = (here / d).relative_to(root).as_posix()
                raise InvalidInput(f"{source} holds a symlinked directory ({rel_dir}); copy it in as a real directory")
        has_safetensors = any(name.endswith(".safetensors") for name in files)
        for name in files:
            if name in SKIPPED_FILES or (has_safetensors and name.endswith(DUPLICATE_WEIGHTS)):
                continue
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                try:
                    path = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise InvalidInput(f"{rel} in {source} is a broken symlink") from None
                if not any(path.is_relative_to(r) for r in roots):
                    raise InvalidInput(
                        f"{rel} in {source} is a symlink that leads outside the model directory "
                        "(only links within it, or into a Hugging Face cache's blobs/, are followed)"
                    )
            if not path.is_file():
                raise InvalidInput(f"{rel} in {source} is not a regular readable file")
            found.append((rel, path))
    if not found:
        raise InvalidInput(f"{source} holds no files")
    if len(found) > MAX_FILES:
        raise InvalidInput(
            f"{source} holds {len(found)} files to seal; a tenant model may have at most {MAX_FILES} "
            "(loading keeps every file open at once)"
        )
    return sorted(found)


def _read(path: Path, digest: Any, rel: str) -> Iterator[bytes]:
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:  # the path checked is the one read
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                yield chunk
    except OSError as exc:
        raise InvalidInput(f"cannot read {rel} from the model directory: {exc.strerror}") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class SealedModels:
    """Seals, opens, deletes and sweeps tenant-owned model files in one blob store."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    def seal(self, tenant_id: str, source: Path) -> str:
        """Encrypt every file under ``source`` for ``tenant_id``; returns the registry source.

        Nothing is left behind on failure (unless the process dies, see :meth:`sweep`).
        """
        if not source.is_dir():
            raise InvalidInput(f"{source} is not a directory")
        written: list[str] = []
        try:
            entries = []
            for rel, path in _files_of(source):
                digest = hashlib.sha256()
                info = self._blobs.put(tenant_id, FILE_KIND, _read(path, digest, rel))
                written.append(info.id)
                entries.append({"path": rel, "size": info.size, "sha256": digest.hexdigest(), "blob": info.id})
            manifest = json.dumps({"format": MANIFEST_FORMAT, "files": entries}, sort_keys=True).encode()
            written.append(self._blobs.put(tenant_id, MANIFEST_KIND, manifest).id)
        except BaseException:
            self._delete_blobs(tenant_id, written)
            raise
        return SEALED_SCHEME + written[-1]

    def bundle(self, tenant_id: str, source: str) -> Bundle:
        """The verified manifest; another tenant's source is NotFound."""
        manifest_id = _manifest_id(source)
        if self._blobs.info(tenant_id, manifest_id).kind != MANIFEST_KIND:
            raise NotFound("no such sealed model")
        try:
            raw = json.loads(self._blobs.read_bytes(tenant_id, manifest_id))
            if raw.get("format") != MANIFEST_FORMAT:
                raise IntegrityError("sealed model manifest is malformed")
            files = tuple(
                SealedFile(str(f["path"]), int(f["size"]), str(f["sha256"]), str(f["blob"])) for f in raw["files"]
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise IntegrityError("sealed model manifest is malformed") from None
        for f in files:
            _relative(f.path)
        return Bundle(manifest_id, files)

    @contextlib.contextmanager
    def open(self, tenant_id: str, source: str) -> Iterator[Path]:
        """A directory of symlinks to verified, read-only memory files, for the block's duration.

        Raises IntegrityError when any file fails authentication or does not match the
        manifest (the message names no file; the log names the manifest and the file's
        index), and ConfigError when the process cannot hold the files (too many open files,
        no memory); nothing of it stays in memory or on disk then.
        """
        if not hasattr(os, "memfd_create"):
            raise NotSupportedYet("sealed models load through memfd_create, which needs Linux")
        bundle = self.bundle(tenant_id, source)
        fds: list[int] = []
        scratch = Path(tempfile.mkdtemp(prefix="appliance-sealed-"))  # 0700; holds symlinks only
        try:
            try:
                for index, f in enumerate(bundle.files):
                    fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
                    fds.append(fd)
                    self._fill(fd, tenant_id, bundle, index)
                    link = scratch / _relative(f.path)
                    link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    link.symlink_to(f"/proc/self/fd/{fd}")
            except OSError as exc:
                raise _staging_error(exc, bundle) from None
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # before the fds close, so no link names a reused fd
            for fd in fds:
                os.close(fd)

    def _fill(self, fd: int, tenant_id: str, bundle: Bundle, index: int) -> None:
        f = bundle.files[index]
        digest = hashlib.sha256()
        size = 0
        try:
            for segment in self._blobs.open(tenant_id, f.blob):
                digest.update(segment)
                size += len(segment)
                _write_all(fd, segment)
        except (IntegrityError, NotFound):
            log.warning("sealed model %s: file %d of %d failed verification", bundle.manifest, index, len(bundle.files))
            raise IntegrityError("a sealed model file failed verification; the model was not loaded") from None
        if size != f.size or digest.hexdigest() != f.sha256:
            log.warning(
                "sealed model %s: file %d of %d does not match its manifest", bundle.manifest, index, len(bundle.files)
            )
            raise IntegrityError("a sealed model file does not match its manifest; the model was not loaded")
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)  # what was verified is what the loader reads
        os.lseek(fd, 0, os.SEEK_SET)

    def delete(self, tenant_id: str, source: str) -> int:
        """Delete a sealed model's blobs (the manifest last); returns how many went.

        Never fails for what is already gone or unreadable: when the manifest is missing or
        cannot be read (damaged, key gone), only the manifest is deleted and its files are
        left for :meth:`sweep`, which deletes them once nothing references them.
        """
        manifest_id = _manifest_id(source)
        try:
            ids = self.bundle(tenant_id, source).blob_ids
        except NotFound:
            return 0  # no manifest (another remove got there first): nothing names its files any more
        except (IntegrityError, KeyUnavailable):
            ids = [manifest_id]
        return self._delete_blobs(tenant_id, [*ids[1:], ids[0]])

    def sweep(self, tenant_id: str, keep: set[str], *, older_than: timedelta = timedelta(hours=1)) -> int:
        """Delete what a killed registration left for ``tenant_id``, if older than ``older_than``
        (younger ones may belong to a seal still running elsewhere): model blobs that no kept
        source references, and the tenant's orphan blob files (temp files, files without a
        row; :meth:`BlobStore.remove_orphan_files`). -> blobs and files deleted.

        A kept model whose manifest cannot be read (damaged, or the tenant's key is gone)
        keeps every model blob of the tenant: which files it needs is unknown.
        """
        cutoff = utcnow() - older_than
        removed = self._blobs.remove_orphan_files(tenant_id, cutoff)
        blobs = [b for b in self._blobs.list(tenant_id) if b.kind in (FILE_KIND, MANIFEST_KIND)]
        referenced: set[str] = set()
        for source in keep & {SEALED_SCHEME + b.id for b in blobs if b.kind == MANIFEST_KIND}:
            try:
                referenced.update(self.bundle(tenant_id, source).blob_ids)
            except NotFound:
                continue  # removed since the listing: its blobs are no longer referenced
            except (IntegrityError, KeyUnavailable):
                return removed  # cannot tell which files that model needs: delete no model blob
        stale = [b.id for b in blobs if b.id not in referenced and b.created_at < cutoff]
        return removed + self._delete_blobs(tenant_id, stale)

    def _delete_blobs(self, tenant_id: str, ids: list[str]) -> int:
        removed = 0
        for blob_id in ids:
            with contextlib.suppress(NotFound):
                self._blobs.delete(tenant_id, blob_id)
                removed += 1
        return removed


def _staging_error(exc: OSError, bundle: Bundle) -> ConfigError:
    """An OSError while staging a sealed model, as an error that names counts, never files."""
    count = len(bundle.files)
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        return ConfigError(
            f"loading this sealed model needs {count} files open at once and the process ran out of "
            "file descriptors; raise the open-files limit (LimitNOFILE)"
        )
    return ConfigError(f"a sealed model of {count} files could not be staged in memory: {exc.strerror}")
