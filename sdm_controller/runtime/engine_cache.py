"""A file cache for built inference programs (TensorRT engines), keyed by what they depend on.

TensorRT programs only run on the GPU model and TensorRT version that built them, and only
describe the weights they were built from. So they are built on the target at first use and
stored here, never shipped. Each entry is two files in the cache folder:

* ``<name>-<key digest>.<suffix>``: the bytes the build function returned;
* the same name + ``.json``: the key fields (artifact weights sha256, GPU name, TensorRT
  version, ...), the sha256 and size of the bytes file, and when it was built.

An entry is used only when its sidecar holds exactly the requested key fields and the bytes
file hashes to the recorded sha256; anything else (missing, truncated, edited, a sidecar from
another key) is rebuilt and overwritten, never trusted. Writes go through a temporary file and
``os.replace``, so a crash or a concurrent build leaves either the old or the new entry.

The folder is ``$SDM_CACHE`` when set, else ``$XDG_CACHE_HOME/sdm_controller/engines``
(``~/.cache/sdm_controller/engines``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sdm_controller.errors import SdmError
from sdm_controller.runtime.artifact import file_sha256

log = logging.getLogger("sdm_controller.runtime")

SIDECAR_VERSION = 1
KeyValue = str | int | float | bool | None


def default_cache_dir() -> Path:
    if os.environ.get("SDM_CACHE"):
        return Path(os.environ["SDM_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "sdm_controller" / "engines"


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CacheResult:
    """Where an entry lies, whether this call built it, and why (``hit`` or the rebuild reason)."""

    path: Path
    built: bool
    reason: str


class EngineCache:
    """``get_or_build(name, keys, build)`` → a verified file holding ``build()``'s bytes."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def paths(self, name: str, keys: Mapping[str, KeyValue], suffix: str = ".engine") -> tuple[Path, Path]:
        """(bytes file, sidecar) of the entry for ``name`` and ``keys``."""
        canonical = self._canonical(keys)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "entry"
        digest = _sha256_bytes(json.dumps(canonical, sort_keys=True).encode())[:24]
        blob = self.root / f"{safe}-{digest}{suffix}"
        return blob, blob.with_name(blob.name + ".json")

    def lookup(self, name: str, keys: Mapping[str, KeyValue], suffix: str = ".engine") -> tuple[Path | None, str]:
        """(path, "hit") for a valid entry, else (None, why it cannot be used)."""
        canonical = self._canonical(keys)
        blob, sidecar = self.paths(name, canonical, suffix)
        if not blob.is_file() or not sidecar.is_file():
            return None, "not cached"
        try:
            record = json.loads(sidecar.read_text())
            recorded_keys, recorded_hash = record["keys"], record["sha256"]
        except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            return None, "sidecar unreadable"
        if record.get("version") != SIDECAR_VERSION:
            return None, f"sidecar version {record.get('version')}"
        if recorded_keys != canonical:
            changed = sorted(k for k in set(canonical) | set(recorded_keys) if canonical.get(k) != recorded_keys.get(k))
            return None, f"key mismatch ({', '.join(changed)})"
        if file_sha256(blob) != recorded_hash:
            return None, "corrupt (sha256 of the cached file differs)"
        return blob, "hit"

    def get_or_build(
        self,
        name: str,
        keys: Mapping[str, KeyValue],
        build: Callable[[], bytes],
        suffix: str = ".engine",
    ) -> CacheResult:
        """Reuse a valid entry, else call ``build()`` once and store what it returns."""
        canonical = self._canonical(keys)
        path, reason = self.lookup(name, canonical, suffix)
        if path is not None:
            log.info("engine cache hit: %s", path)
            return CacheResult(path, built=False, reason="hit")
        log.info("engine cache: building %s (%s)", name, reason)
        data = build()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SdmError(f"the build function for '{name}' returned {type(data).__name__}, not bytes")
        data = bytes(data)
        if not data:
            raise SdmError(f"the build function for '{name}' returned no bytes")
        blob, sidecar = self.paths(name, canonical, suffix)
        self.root.mkdir(parents=True, exist_ok=True)
        record = {
            "version": SIDECAR_VERSION,
            "name": name,
            "keys": canonical,
            "sha256": _sha256_bytes(data),
            "size": len(data),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        sidecar.unlink(missing_ok=True)  # a crash between the two writes must not leave a "valid" pair
        self._atomic_write(blob, data)
        self._atomic_write(sidecar, json.dumps(record, indent=2).encode())
        return CacheResult(blob, built=True, reason=reason)

    def invalidate(self, name: str, keys: Mapping[str, KeyValue], suffix: str = ".engine") -> None:
        """Remove an entry (e.g. one that hashed fine but failed to load)."""
        for path in self.paths(name, keys, suffix):
            path.unlink(missing_ok=True)

    @staticmethod
    def _canonical(keys: Mapping[str, KeyValue]) -> dict[str, KeyValue]:
        out = {}
        for key, value in keys.items():
            if not isinstance(value, str | int | float | bool | type(None)):
                raise SdmError(f"engine cache key '{key}' must be a string or number, got {type(value).__name__}")
            out[str(key)] = value
        return dict(sorted(out.items()))

    def _atomic_write(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
