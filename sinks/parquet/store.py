"""Where dataset files live: the local file system, or any fsspec URI.

Both stores offer the three operations the commit protocol needs:

- ``write_durable(path, data)``: the bytes are on stable storage when it returns
  (local: write, ``fsync`` the file and its folder; object stores: one PUT, which is
  atomic and durable once acknowledged);
- ``create_exclusive(path, data)``: like ``write_durable`` but fails if ``path``
  exists, used for manifest entries (local: temp file + ``link``, which refuses to
  overwrite; object stores: existence check + PUT, safe with one writer per sink
  partition);
- ``publish(src, dst)``: make a staged file visible under its final name, never
  overwriting (local: ``link`` + ``unlink``, atomic; object stores have no rename, so
  a server-side copy then a delete: the copy appears atomically and completely, and a
  crash between the two leaves a staged file that recovery removes).

Paths given to a store are relative to its root and use ``/``.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Any, Protocol


class Store(Protocol):
    """The file operations the sink, ``verify`` and ``query`` need."""

    root: str

    def write_durable(self, path: str, data: bytes) -> None: ...
    def create_exclusive(self, path: str, data: bytes) -> None: ...
    def publish(self, src: str, dst: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def read(self, path: str) -> bytes: ...
    def size(self, path: str) -> int: ...
    def list_files(self, folder: str) -> list[str]: ...
    def list_dirs(self, folder: str) -> list[str]: ...
    def remove(self, path: str) -> None: ...
    def uri(self, path: str) -> str: ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """A folder on a POSIX file system (atomic ``link``/``rename``, ``fsync``)."""

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.base = Path(root).resolve()
        self.root = str(self.base)
        self.fsync = fsync

    def _p(self, path: str) -> Path:
        return self.base / path

    def _mkdirs(self, folder: Path) -> None:
        if folder.is_dir():
            return
        missing = []
        cur = folder
        while not cur.exists():
            missing.append(cur)
            cur = cur.parent
        folder.mkdir(parents=True, exist_ok=True)
        if self.fsync:
            for d in reversed(missing):
                _fsync_dir(d.parent)

    def _write_tmp(self, target: Path, data: bytes) -> Path:
        self._mkdirs(target.parent)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.inflight"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        return tmp

    def write_durable(self, path: str, data: bytes) -> None:
        target = self._p(path)
        tmp = self._write_tmp(target, data)
        os.replace(tmp, target)
        if self.fsync:
            _fsync_dir(target.parent)

    def create_exclusive(self, path: str, data: bytes) -> None:
        target = self._p(path)
        tmp = self._write_tmp(target, data)
        try:
            os.link(tmp, target)
        finally:
            os.unlink(tmp)
        if self.fsync:
            _fsync_dir(target.parent)

    def publish(self, src: str, dst: str) -> None:
        s, d = self._p(src), self._p(dst)
        self._mkdirs(d.parent)
        try:
            os.link(s, d)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            if not os.path.samefile(s, d):
                raise FileExistsError(f"refusing to overwrite committed file {dst}") from None
        if self.fsync:
            _fsync_dir(d.parent)
        os.unlink(s)
        if self.fsync:
            _fsync_dir(s.parent)

    def exists(self, path: str) -> bool:
        return self._p(path).exists()

    def read(self, path: str) -> bytes:
        return self._p(path).read_bytes()

    def size(self, path: str) -> int:
        return self._p(path).stat().st_size

    def list_files(self, folder: str) -> list[str]:
        base = self._p(folder)
        if not base.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                out.append(os.path.relpath(os.path.join(dirpath, f), self.base).replace(os.sep, "/"))
        return sorted(out)

    def list_dirs(self, folder: str) -> list[str]:
        base = self._p(folder)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def remove(self, path: str) -> None:
        try:
            self._p(path).unlink()
        except FileNotFoundError:
            pass

    def uri(self, path: str) -> str:
        return str(self._p(path))


class FsspecStore:
    """Any fsspec file system (s3://, gs://, abfs://, memory://): no rename, atomic PUTs."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        from fsspec.core import url_to_fs

        self.fs, base = url_to_fs(uri, **(storage_options or {}))
        self.protocol = uri.split("://", 1)[0]
        self.base = base.rstrip("/")
        self.root = uri.rstrip("/")

    def _p(self, path: str) -> str:
        return f"{self.base}/{path}" if path else self.base

    def write_durable(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(path), data)

    def create_exclusive(self, path: str, data: bytes) -> None:
        if self.fs.exists(self._p(path)):
            raise FileExistsError(f"{path} already exists")
        self.fs.pipe_file(self._p(path), data)

    def publish(self, src: str, dst: str) -> None:
        s, d = self._p(src), self._p(dst)
        if self.fs.exists(d):
            if self.fs.size(d) != self.fs.size(s):
                raise FileExistsError(f"refusing to overwrite committed file {dst}")
        else:
            self.fs.copy(s, d)
        self.fs.rm(s)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._p(path)))

    def read(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(self._p(path)))

    def size(self, path: str) -> int:
        return int(self.fs.size(self._p(path)))

    def _rel(self, full: str) -> str:
        full = full.lstrip("/") if not self.base.startswith("/") else full
        base = self.base.lstrip("/") if not self.base.startswith("/") else self.base
        return full[len(base) + 1 :] if full.startswith(base + "/") else full

    def list_files(self, folder: str) -> list[str]:
        p = self._p(folder)
        if not self.fs.exists(p):
            return []
        return sorted(self._rel(f) for f in self.fs.find(p))

    def list_dirs(self, folder: str) -> list[str]:
        p = self._p(folder)
        if not self.fs.exists(p):
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in self.fs.ls(p, detail=True) if e["type"] == "directory")

    def remove(self, path: str) -> None:
        if self.fs.exists(self._p(path)):
            self.fs.rm(self._p(path))

    def uri(self, path: str) -> str:
        return f"{self.protocol}://{self._p(path).lstrip('/')}" if self.protocol != "memory" else f"memory://{self._p(path)}"


def open_store(root: str, storage_options: dict[str, Any] | None = None, *, fsync: bool = True) -> LocalStore | FsspecStore:
    """A :class:`LocalStore` for plain paths and ``file://`` URIs, else an :class:`FsspecStore`."""
    if "://" not in root:
        return LocalStore(root, fsync=fsync)
    if root.startswith("file://"):
        return LocalStore(root[len("file://") :], fsync=fsync)
    return FsspecStore(root, storage_options)
