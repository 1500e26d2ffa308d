"""Atomic, sealed writes: nothing in a run folder is ever half-written, and damage is detected on read.

Every file goes to a temporary name in the same folder, is flushed and fsynced, then renamed over
the target (``os.replace`` is atomic on POSIX and Windows), and the folder is fsynced. A kill at any
moment leaves either the old file or the new one. Files get the permissions of an ordinary file
(``0666 & ~umask``, 0644 under the usual umask). Checkpoints are read with
``torch.load(weights_only=True)``: a run folder never executes code.

Each file carries a content digest *inside itself*, so the digest and the content are replaced by the
same rename and a kill can never leave them disagreeing:

* checkpoints (``save_torch``): a SHA-256 of the ``torch.save`` bytes in the zip archive's comment
  (plain ``torch.load`` still reads the file);
* JSON (``write_json``): a first key ``"sha256"`` holding the SHA-256 of the file's text with that
  value blanked;
* YAML (``write_yaml_text``): a first line ``# sha256: <hex>`` over the text below it;
* JSON lines (``seal_line``): a last key ``"crc32"`` over the line's text before it.

On read a digest that does not match is corruption: :class:`nascore.errors.CheckpointError` naming
the file (callers fall back where they can). A file without a digest (written by hand, or by an
older nascore) is read unverified. JSON is strict: no bare ``NaN``/``Infinity`` is ever written —
a non-finite number is written as ``null`` (with a warning naming the file and the field).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from nascore.errors import CheckpointError, NascoreError

TEMP_SUFFIX = ".tmp"
"""Temporary files are ``.<name>.<random>.tmp`` beside their target (see :func:`clean_temp_files`)."""

_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK

_CORRUPT_HINT = "the file was damaged after it was written (disk, copy, edit); restore it from a backup or start a new run"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(fileobj)`` atomically; an unwritable folder is a NascoreError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise NascoreError(f"cannot write {path}: {e.strerror or e}",
                           hint="the folder is read-only or the disk is full; choose a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise NascoreError(f"cannot write {path}: {e.strerror or e}",
                               hint="the disk may be full or the folder read-only") from None
        raise
    _fsync_dir(path.parent)


def clean_temp_files(folder: Path) -> list[Path]:
    """Remove the temporary files that killed writes left under ``folder``; returns them.

    Only a process that owns the folder (a run or its resume) calls this; readers ignore them.
    """
    removed = []
    if not folder.is_dir():
        return removed
    for p in list(folder.rglob(f".*{TEMP_SUFFIX}")) + list(folder.rglob(f"*.onnx{TEMP_SUFFIX}")):
        try:
            if p.is_file():
                p.unlink()
                removed.append(p)
        except OSError:
            pass
    return removed


# -- strict JSON -------------------------------------------------------------------------------
def finite_json(obj: Any, where: str = "", on_nonfinite: Callable[[str], None] | None = None) -> Any:
    """``obj`` as plain JSON data, every non-finite float replaced by None (``on_nonfinite(field)``)."""
    if isinstance(obj, dict):
        return {str(k): finite_json(v, f"{where}.{k}" if where else str(k), on_nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v, f"{where}.{i}" if where else str(i), on_nonfinite) for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        return [finite_json(v, where, on_nonfinite) for v in sorted(obj)]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        if on_nonfinite is not None:
            on_nonfinite(where or "(value)")
        return None
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # tensors, numpy arrays and scalars
        return finite_json(obj.tolist(), where, on_nonfinite)
    if hasattr(obj, "item"):
        return finite_json(obj.item(), where, on_nonfinite)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__} at {where or '(top)'}")


def dumps_strict(obj: Any, *, path: str | Path | None = None, **kwargs: Any) -> str:
    """``json.dumps`` that never writes ``NaN``/``Infinity``: such values become null, with a warning."""
    bad: list[str] = []
    text = json.dumps(finite_json(obj, on_nonfinite=bad.append), allow_nan=False, **kwargs)
    if bad and path is not None:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        print(f"nascore: warning: {path}: non-finite value(s) written as null: {shown}", file=sys.stderr)
    return text


# -- JSON files with an embedded digest ----------------------------------------------------------
_JSON_SLOT = re.compile(r'\A\{\n  "([^"\n]{6})": "([^"\n]{64})"')
_BLANK = "0" * 64


def _json_slot_blanked(text: str) -> tuple[str, str, str] | None:
    """(key, digest, text with the digest blanked) when ``text`` starts with a digest slot."""
    m = _JSON_SLOT.match(text)
    if m is None:
        return None
    return m.group(1), m.group(2), text[: m.start(2)] + _BLANK + text[m.end(2):]


def seal_json_text(data: Any, *, path: str | Path | None = None) -> str:
    """The text ``write_json`` writes: strict JSON, a dict's first key the digest of the rest."""
    if not isinstance(data, dict):
        return dumps_strict(data, path=path, indent=2) + "\n"
    body = {k: v for k, v in data.items() if k != "sha256"}
    text = dumps_strict({"sha256": _BLANK, **body}, path=path, indent=2) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    return text.replace(_BLANK, digest, 1)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as strict JSON with its digest (see the module doc)."""
    text = seal_json_text(data, path=path).encode()
    atomic_write(path, lambda f: f.write(text))


def parse_json_text(text: str, path: str | Path) -> Any:
    """Parse and verify the text of a JSON file ``write_json`` wrote (digest dropped from the result)."""
    try:
        data = json.loads(text)  # lenient on read: files of older versions may hold a bare NaN
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})",
                              hint="the file is truncated or corrupted; restore it or start a new run") from None
    slot = _json_slot_blanked(text)
    if slot is not None and isinstance(data, dict):
        key, digest, blanked = slot
        if key != "sha256" or hashlib.sha256(blanked.encode()).hexdigest() != digest:
            raise CheckpointError(f"{path}: content digest mismatch (the file is corrupted)", hint=_CORRUPT_HINT)
        data.pop("sha256", None)
    elif isinstance(data, dict):
        data.pop("sha256", None)  # a hand-written copy of a sealed file: read unverified
    return data


def read_json(path: str | Path) -> Any:
    """Read a JSON file, verifying its digest when it has one; any damage is a CheckpointError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not valid JSON (not UTF-8 text)",
                              hint="the file is truncated or corrupted; restore it or start a new run") from None
    return parse_json_text(text, path)


# -- text (YAML) files with a digest line ---------------------------------------------------------
_TEXT_PREFIX = "# sha256: "
_TEXT_NOTE = "  (digest of the lines below; delete this line to edit the file by hand)"


def seal_text(text: str) -> str:
    """``text`` under a first line ``# sha256: <hex> …`` over everything below it (a YAML comment).

    First, not last: a truncated file keeps its digest line and is caught.
    """
    if not text.endswith("\n"):
        text += "\n"
    return f"{_TEXT_PREFIX}{hashlib.sha256(text.encode()).hexdigest()}{_TEXT_NOTE}\n{text}"


def unseal_text(text: str, path: str | Path) -> tuple[str, bool]:
    """(text without its digest line, whether it had one); a wrong digest is a CheckpointError."""
    first, sep, body = text.partition("\n")
    if "sha256" not in first and len(first) != len(_TEXT_PREFIX) + 64 + len(_TEXT_NOTE):
        return text, False
    if not sep or first != _TEXT_PREFIX + hashlib.sha256(body.encode()).hexdigest() + _TEXT_NOTE:
        raise CheckpointError(
            f"{path}: content digest mismatch (the file is corrupted or was edited)",
            hint=f"{_CORRUPT_HINT}; if you edited it on purpose, delete its first line (`{_TEXT_PREFIX}…`) to accept the edit")
    return body, True


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_yaml_text(path: str | Path, text: str) -> None:
    """Write YAML ``text`` with its digest line (see :func:`read_text_verified`)."""
    write_text(path, seal_text(text))


def read_text_verified(path: str | Path) -> str:
    """The text of a file :func:`write_yaml_text` wrote, verified, without the digest line."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8 text (the file is corrupted)", hint=_CORRUPT_HINT) from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    return unseal_text(text, path)[0]


# -- JSON lines with a CRC -------------------------------------------------------------------------
_LINE_SLOT = re.compile(r', "([^"]{5})": "([^"]{8})"\}\Z')


def seal_line(record: dict[str, Any], *, path: str | Path | None = None) -> str:
    """One strict-JSON line for ``record`` ending in ``"crc32": "<hex>"`` (no newline)."""
    body = dumps_strict({k: v for k, v in record.items() if k != "crc32"}, path=path)[:-1]
    return f'{body}, "crc32": "{zlib.crc32(body.encode()):08x}"}}'


def parse_line(line: str) -> Any:
    """A JSON line, CRC-checked when it has one; raises ValueError when damaged."""
    value = json.loads(line)
    m = _LINE_SLOT.search(line)
    if m is not None and isinstance(value, dict):
        if m.group(1) != "crc32" or f"{zlib.crc32(line[: m.start()].encode()):08x}" != m.group(2):
            raise ValueError("CRC mismatch")
        value.pop("crc32", None)
    elif isinstance(value, dict):
        value.pop("crc32", None)
    return value


# -- checkpoints with the digest in the zip comment ---------------------------------------------------
_ZIP_EOCD = b"PK\x05\x06"
_ZIP_TAG = b"nascore-sha256:"
_ZIP_COMMENT = len(_ZIP_TAG) + 64
_CHUNK = 8 << 20


class _Hashing:
    """A write-only file that hashes what passes through it and keeps the last 22 bytes (the zip end record)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.h, self.tail = f, hashlib.sha256(), b""

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        self.h.update(view)
        self.tail = (self.tail + bytes(view[-22:]))[-22:]
        return self.f.write(view)

    def flush(self) -> None:
        self.f.flush()


def _write_sealed_torch(obj: Any, f: IO[bytes]) -> None:
    """``torch.save`` into ``f``, then the digest of those bytes as the zip archive's comment.

    The bytes are hashed as they are written (no copy in memory); the end record's comment length
    (the last two bytes, 0) is then overwritten and the comment appended: still a valid zip.
    """
    w = _Hashing(f)
    torch.save(obj, w)
    if len(w.tail) != 22 or not w.tail.startswith(_ZIP_EOCD) or w.tail[20:] != b"\x00\x00":
        return  # not a plain zip ending: left as it is (read unverified)
    f.seek(-2, os.SEEK_END)
    f.write(struct.pack("<H", _ZIP_COMMENT) + _ZIP_TAG + w.h.hexdigest().encode())


def _check_zip(path: Path) -> None:
    """Verify the digest in a sealed zip's comment; an unsealed zip (comment-free) is read unverified."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 22 - _ZIP_COMMENT))
        tail = f.read()
        if tail[-22:-18] == _ZIP_EOCD:
            return  # no comment: not sealed by nascore
        eocd, comment = tail[:22], tail[22:]
        if not (len(tail) == 22 + _ZIP_COMMENT and eocd[:4] == _ZIP_EOCD and comment.startswith(_ZIP_TAG)
                and struct.unpack("<H", eocd[20:22])[0] == _ZIP_COMMENT):
            raise CheckpointError(f"{path}: content digest missing or damaged (the file is corrupted)", hint=_CORRUPT_HINT)
        h = hashlib.sha256()
        f.seek(0)
        left = size - _ZIP_COMMENT - 2  # everything up to the comment length, which was 0 when hashed
        while left > 0:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        h.update(b"\x00\x00")
    if h.hexdigest().encode() != comment[len(_ZIP_TAG):]:
        raise CheckpointError(f"{path}: content digest mismatch (the file is corrupted)", hint=_CORRUPT_HINT)


def save_torch(path: str | Path, obj: Any) -> None:
    """``torch.save`` ``obj`` atomically, with its digest in the archive (plain torch.load still works)."""
    atomic_write(path, lambda f: _write_sealed_torch(obj, f))


def load_torch(path: str | Path, map_location: Any = "cpu") -> Any:
    """Load a checkpoint safely (``weights_only=True``), digest verified; a bad file raises CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        _check_zip(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror or e})") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            hint="the file is truncated or corrupted, or was not written by nascore",
        ) from None
