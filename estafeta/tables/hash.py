"""hash:/path — estafeta's own indexed table file, /path.db built from /path.

Owns the on-disk format, the builder (used by `estafeta map` and `newaliases`)
and the reader. Postfix's hash tables are Berkeley DB files; ours is a constant
database of our own design (in the spirit of D. J. Bernstein's cdb), written once
and then only read:

    header  32 bytes  "<8sIIQQ": magic b"ESTHASH1" (last byte = format version),
                      slot count (a power of two), record count, table offset, 0
    records           per entry "<II" key length, value length, key, value (UTF-8)
    table             slot count x "<QQ": 64-bit key hash, record offset (0 = empty)

Lookups hash the key (BLAKE2b, 8 bytes), probe the open-addressed table linearly
from `hash & (slots - 1)`, and compare the stored key: a few reads of an mmap, no
parsing. The table is at most half full, so probes are short.

Keys are lowercased when built and when looked up, as Postfix does for hash
tables (postmap without -f). The .db is replaced atomically (temporary file in the
same directory, fsync, rename, fsync of the directory): a reader sees the old or
the new file, never half of one, and reopens when the .db's inode, size or mtime
changes. Trust boundary: the .db belongs to the administrator; a malformed one is
a temporary error for lookups (never "not found"), with the file named.
Next: tables/__init__.py (registry), tables/aliases.py (the aliases source format).
"""
from __future__ import annotations

import hashlib
import mmap
import os
import struct
from collections.abc import Iterable

from ..core.atomic import atomic_write
from ..core.errors import ConfigError
from . import TableTempError

MAGIC = b"ESTHASH1"
_HEADER = struct.Struct("<8sIIQQ")
_RECORD = struct.Struct("<II")
_SLOT = struct.Struct("<QQ")


def key_hash(key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def build_image(pairs: Iterable[tuple[str, str]]) -> bytes:
    """The whole .db image for these pairs; later duplicates replace earlier ones."""
    entries: dict[bytes, bytes] = {}
    for k, v in pairs:
        entries[_encode(k.lower())] = _encode(v)
    slots = 1
    while slots < 2 * len(entries):
        slots *= 2
    out = bytearray(_HEADER.size)
    table = [(0, 0)] * slots
    mask = slots - 1
    for k, v in entries.items():
        off = len(out)
        out += _RECORD.pack(len(k), len(v)) + k + v
        h = key_hash(k)
        i = h & mask
        while table[i][1]:
            i = (i + 1) & mask
        table[i] = (h, off)
    table_offset = len(out)
    for h, off in table:
        out += _SLOT.pack(h, off)
    out[:_HEADER.size] = _HEADER.pack(MAGIC, slots, len(entries), table_offset, 0)
    return bytes(out)


def write_atomic(path: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Replace `path` with `data` through the one atomic-write helper (core/atomic.py)."""
    atomic_write(path, data, mode=mode, owner=owner)


def build(path: str, pairs: Iterable[tuple[str, str]]) -> int:
    """Write path + ".db" from pairs, owned like the source file when it exists (as postmap).

    Returns the number of entries.
    """
    image = build_image(pairs)
    owner = None
    mode = 0o644
    try:
        st = os.stat(path)
        mode = st.st_mode & 0o644 | 0o600
        if os.geteuid() == 0:
            owner = (st.st_uid, st.st_gid)
    except FileNotFoundError:
        pass
    write_atomic(path + ".db", image, mode, owner)
    return _HEADER.unpack_from(image)[2]


class HashTable:
    """hash:/path — reads /path.db (see the module docstring for the layout)."""

    def __init__(self, path: str) -> None:
        self.name = f"hash:{path}"
        self.path = path
        self.db_path = path + ".db"
        self._map: mmap.mmap | None = None
        self._ident: tuple[int, int, int, int] | None = None
        self._slots = 0
        self._table = 0
        try:
            self._open()
        except FileNotFoundError:
            raise ConfigError(self.db_path, 0, f"table file not found (build it with 'estafeta map {self.name}')") from None
        except OSError as e:
            raise TableTempError(f"{self.name}: {e}") from e

    def _open(self) -> None:
        with open(self.db_path, "rb") as f:
            st = os.fstat(f.fileno())
            ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if st.st_size < _HEADER.size:
                raise TableTempError(f"{self.db_path}: file too short for a hash table")
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        magic, slots, _n, table, _ = _HEADER.unpack_from(m)
        if magic != MAGIC:
            m.close()
            raise TableTempError(f"{self.db_path}: not an estafeta hash table (bad magic; rebuild it)")
        if slots & (slots - 1) or table + slots * _SLOT.size != len(m):
            m.close()
            raise TableTempError(f"{self.db_path}: corrupt hash table (bad size)")
        if self._map is not None:
            self._map.close()
        self._map, self._ident, self._slots, self._table = m, ident, slots, table

    @property
    def owner_uid(self) -> int:
        """Owner of the .db: deliveries to files and commands from aliases get its rights."""
        return os.stat(self.db_path).st_uid

    def _fresh(self) -> mmap.mmap:
        try:
            st = os.stat(self.db_path)
        except OSError as e:
            raise TableTempError(f"{self.name}: {e}") from e
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self._ident:
            try:
                self._open()
            except OSError as e:
                raise TableTempError(f"{self.name}: {e}") from e
        assert self._map is not None
        return self._map

    def lookup(self, key: str) -> str | None:
        m = self._fresh()
        k = _encode(key.lower())
        h = key_hash(k)
        mask = self._slots - 1
        i = h & mask
        for _ in range(self._slots):
            sh, off = _SLOT.unpack_from(m, self._table + i * _SLOT.size)
            if off == 0:
                return None
            if sh == h:
                klen, vlen = self._record(m, off)
                start = off + _RECORD.size
                if m[start:start + klen] == k:
                    return m[start + klen:start + klen + vlen].decode("utf-8", "surrogateescape")
            i = (i + 1) & mask
        return None

    def _record(self, m: mmap.mmap, off: int) -> tuple[int, int]:
        """(key length, value length) of the record at `off` (any 64-bit number in a
        damaged .db: struct would raise error or OverflowError), else TableTempError."""
        if off + _RECORD.size > len(m):
            raise TableTempError(f"{self.db_path}: corrupt record at {off}")
        klen, vlen = _RECORD.unpack_from(m, off)
        return klen, vlen

    def items(self) -> list[tuple[str, str]]:
        """Every entry (for `estafeta map -s`); order is the table's."""
        m = self._fresh()
        out = []
        for i in range(self._slots):
            _h, off = _SLOT.unpack_from(m, self._table + i * _SLOT.size)
            if off:
                klen, vlen = self._record(m, off)
                s = off + _RECORD.size
                out.append((m[s:s + klen].decode("utf-8", "surrogateescape"),
                            m[s + klen:s + klen + vlen].decode("utf-8", "surrogateescape")))
        return out


def source_pairs(path: str) -> list[tuple[str, str]]:
    """postmap's source format: "key value", continuation lines, # comments."""
    from . import TextHashTable
    return list(TextHashTable(path).data.items())
