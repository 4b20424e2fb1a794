"""The durable tier of memories: one safetensors file per memory on a local or shared volume.

Redis is the hot tier and may evict; this copy is what a miss falls back
to before anything is re-formed. A memory is written as
``<root>/<kb>/<doc>.<version>.safetensors`` (the exact bytes Redis holds)
and then its manifest ``<doc>.json`` (the same version, checksum and
metadata) is swapped in with one rename, so a reader sees the old memory or
the new one; the superseded file is removed after the swap.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote, unquote

from store.errors import CorruptMemory

SUFFIX = ".safetensors"
ID_FILE = ".tier-id"  # no kb folder can be named so: _stem escapes dots


class DiskTier:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _dir(self, kb: str) -> Path:
        return self.root / _stem(kb)

    def _manifest_path(self, kb: str, doc: str) -> Path:
        return self._dir(kb) / f"{_stem(doc)}.json"

    def data_path(self, kb: str, doc: str, version: str) -> Path:
        return self._dir(kb) / f"{_stem(doc)}.{version}{SUFFIX}"

    def put(self, kb: str, doc: str, data: bytes, manifest: dict) -> None:
        """Write the bytes, then swap the manifest in; both reach the disk before this returns."""
        folder = self._dir(kb)
        folder.mkdir(parents=True, exist_ok=True)
        previous = self.manifest(kb, doc, strict=False)
        _write_atomic(self.data_path(kb, doc, manifest["version"]), data)
        _write_atomic(self._manifest_path(kb, doc), json.dumps(manifest).encode())
        if previous and previous["version"] != manifest["version"]:
            self.data_path(kb, doc, previous["version"]).unlink(missing_ok=True)

    def manifest(self, kb: str, doc: str, *, strict: bool = True) -> dict | None:
        try:
            raw = self._manifest_path(kb, doc).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            if not strict:
                return None
            raise CorruptMemory(f"memory manifest {self._manifest_path(kb, doc)} is unreadable: {exc}") from exc

    def get(self, kb: str, doc: str) -> tuple[bytes, dict] | None:
        """The verified bytes and manifest, None when there is no copy; CorruptMemory when it is damaged."""
        for _ in range(2):  # a writer may swap versions between our two reads: read the new manifest once more
            manifest = self.manifest(kb, doc)
            if manifest is None:
                return None
            try:
                data = self.data_path(kb, doc, manifest["version"]).read_bytes()
            except FileNotFoundError:
                continue
            except KeyError as exc:
                raise CorruptMemory(f"memory manifest for {kb}/{doc} lacks {exc}") from exc
            if len(data) != manifest.get("size") or hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
                raise CorruptMemory(f"memory file for {kb}/{doc} on disk does not match its checksum")
            return data, manifest
        raise CorruptMemory(f"memory file for {kb}/{doc} named by its manifest is missing")

    def exists(self, kb: str, doc: str) -> bool:
        return self._manifest_path(kb, doc).exists()

    def delete(self, kb: str, doc: str) -> bool:
        path = self._manifest_path(kb, doc)
        if not path.exists():
            return False
        for file in self._dir(kb).glob(f"{_stem(doc)}.*{SUFFIX}"):
            file.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return True

    def list(self, kb: str) -> list[str]:
        folder = self._dir(kb)
        return sorted(unquote(p.name.removesuffix(".json")) for p in folder.glob("*.json")) if folder.exists() else []

    def identity(self) -> str:
        """This tier's id, made once and kept in its folder: workers that report the same id share the volume
        (a memory one of them wrote, the other can load), workers with different ids do not."""
        path = self.root / ID_FILE
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
            with os.fdopen(fd, "w") as fh:
                fh.write(uuid.uuid4().hex[:12])
            try:
                os.link(tmp, path)  # atomic, and refused when another process made it first
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        return path.read_text().strip()

    def nbytes(self) -> int:
        """Bytes of every memory file (for capacity figures)."""
        return sum(p.stat().st_size for p in self.root.rglob(f"*{SUFFIX}")) if self.root.exists() else 0


def _stem(name: str) -> str:
    """A file name for any kb or document name: no separators, no dots (so ``..`` stays inside the root)."""
    return quote(name, safe="").replace(".", "%2E")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
