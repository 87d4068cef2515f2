"""Where the bytes come from: a folder or a zip read in place, as relative POSIX file paths."""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path
from types import TracebackType

from anklealign.errors import DataError
from anklealign.ingest.cache import atomic_write_bytes

__all__ = ["Source", "open_source"]

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


class Source:
    """A data source: every regular file under a folder, or every file member of a zip.

    File names are POSIX paths relative to the folder (or the zip's top). Nothing is extracted.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.is_zip = path.is_file()
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, zipfile.ZipInfo] = {}
        if self.is_zip:
            self._open_zip()
            self.files = tuple(sorted(self._members))
        else:
            self.files = tuple(sorted(_walk(path)))

    def _open_zip(self) -> None:
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{self.path}: not a readable zip file ({exc})") from None
        for info in self._zip.infolist():
            name = _member_name(info)
            parts = name.split("/")
            if name.startswith("/") or _DRIVE.match(name) or ".." in parts:
                self._zip.close()
                raise DataError(f"{self.path}: zip member {info.filename!r} points outside the archive "
                                "(absolute path or '..'); refusing to read it")
            name = "/".join(p for p in parts if p not in ("", "."))
            if not info.is_dir() and name:
                self._members[name] = info

    def read(self, name: str) -> bytes:
        """The bytes of one file; raises OSError (or zipfile.BadZipFile) when it cannot be read."""
        if self._zip is not None:
            return self._zip.read(self._members[name])
        return (self.path / name).read_bytes()

    def fingerprint(self, memo_dir: Path) -> str:
        """A hash of the source's content: sha256 of the zip bytes, or of every file's path, size, mtime.

        Hashing a 500 MB zip takes about a second, so the digest is remembered in ``memo_dir``
        under the zip's (path, size, mtime); any change to the file hashes it again.
        """
        if self._zip is None:
            digest = hashlib.sha256()
            for name in self.files:
                stat = (self.path / name).stat()
                digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            return "dir-" + digest.hexdigest()
        stat = self.path.stat()
        stat_key = f"{self.path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode("utf-8", "surrogateescape")
        memo = memo_dir / f"zip-{hashlib.sha256(stat_key).hexdigest()[:32]}.json"
        try:
            return str(json.loads(memo.read_text())["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        digest = hashlib.sha256()
        with self.path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        result = "zip-" + digest.hexdigest()
        atomic_write_bytes(memo, json.dumps({"path": str(self.path), "sha256": result}).encode())
        return result

    def close(self) -> None:
        """Close the zip file, if any."""
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_source(path: Path) -> Source:
    """Open a folder or zip; :class:`DataError` when it does not exist or holds no files."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if not path.is_dir() and not path.is_file():
        raise DataError(f"{path}: not a regular file or folder")
    source = Source(path)
    if not source.files:
        source.close()
        raise DataError(f"{path}: {'the zip' if source.is_zip else 'the folder'} holds no files")
    return source


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member's name as the archiver meant it: UTF-8 even without the flag, ``/`` separators."""
    name = info.filename
    if not info.flag_bits & 0x800:  # no UTF-8 flag: zipfile decoded it as cp437; most tools wrote UTF-8
        try:
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return name.replace("\\", "/")


def _walk(top: Path) -> list[str]:
    found = []
    for folder, _dirs, names in os.walk(top):
        rel = Path(folder).relative_to(top)
        for name in names:
            if (Path(folder) / name).is_file():
                found.append((rel / name).as_posix())
    return found
