"""The on-disk cache: where it lives, atomic writes, and the two cached artefacts.

* ``scan-<key>.json``: what the scan decided (labels, splits, groups, the quality report), keyed by
  the source's content fingerprint and :data:`SCAN_VERSION`.
* ``images-<key>.pt``: the decoded uint8 tensors, keyed by the same fingerprint plus image size,
  colour and resize mode (and :data:`DECODE_VERSION`); read back with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["DECODE_VERSION", "SCAN_VERSION", "atomic_write_bytes", "default_cache_dir", "load_images",
           "load_scan", "save_images", "save_scan"]

_log = logging.getLogger(__name__)

SCAN_VERSION = 5      # bump when the scan's rules or its stored form change (2: mirrored copies, 3: twin,
                      # 4: no mirror grouping nor relabelling in class folders, 5: the twin's seed)
DECODE_VERSION = 1    # bump when decoding or resizing changes


def default_cache_dir() -> Path:
    """``$ANKLEALIGN_CACHE``, else ``~/.cache/anklealign``."""
    env = os.environ.get("ANKLEALIGN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anklealign"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file and ``os.replace``, so that readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:40]


def _scan_path(cache_dir: Path, fingerprint: str) -> Path:
    return cache_dir / f"scan-{_key(fingerprint, SCAN_VERSION)}.json"


def _images_path(cache_dir: Path, fingerprint: str, image_size: int, color: str, resize: str) -> Path:
    key = _key(fingerprint, SCAN_VERSION, DECODE_VERSION, image_size, color, resize)
    return cache_dir / f"images-{key}.pt"


def load_scan(cache_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The cached scan of a source, or ``None`` (missing or unreadable: the caller scans again)."""
    path = _scan_path(cache_dir, fingerprint)
    try:
        scan = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        _log.warning("ignoring unreadable cache file %s (%s)", path, exc)
        return None
    return scan if isinstance(scan, dict) and scan.get("fingerprint_source") == fingerprint else None


def save_scan(cache_dir: Path, fingerprint: str, scan: dict[str, Any]) -> None:
    """Store a scan (plain JSON) atomically."""
    atomic_write_bytes(_scan_path(cache_dir, fingerprint), json.dumps(scan).encode("utf-8"))


def load_images(cache_dir: Path, fingerprint: str, *, image_size: int, color: str,
                resize: str) -> dict[str, Any] | None:
    """The cached ``{"ids": [...], "images": uint8 tensor}``, or ``None``."""
    import torch  # imported on use: `python -m anklealign inspect` never needs it
    path = _images_path(cache_dir, fingerprint, image_size, color, resize)
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file is a cache miss, not a failure
        _log.warning("ignoring unreadable cache file %s (%s)", path, exc)
        return None
    if not isinstance(blob, dict) or not isinstance(blob.get("images"), torch.Tensor):
        return None
    return blob


def save_images(cache_dir: Path, fingerprint: str, blob: dict[str, Any], *, image_size: int, color: str,
                resize: str) -> None:
    """Store decoded tensors atomically (:func:`torch.save`, then :func:`atomic_write_bytes`)."""
    import torch
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    atomic_write_bytes(_images_path(cache_dir, fingerprint, image_size, color, resize), buffer.getvalue())
