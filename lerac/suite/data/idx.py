"""IDX files (the MNIST family's format), read defensively.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dims),
one big-endian uint32 per dim, then the values, big-endian, row-major. It may be gzipped
(recognised by its first bytes, not its name). The header is checked before anything is
allocated: a known type, 1 to ``MAX_DIMS`` dims, no zero dim, at most ``max_bytes`` of
data; an uncompressed file must hold exactly the data its header announces, a gzipped one
is read in chunks up to that size and must end there. Every problem is one
:class:`~lerac.errors.CorruptDataError` naming the file.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from lerac.errors import CorruptDataError

# Type code -> big-endian numpy dtype (the format's own table).
TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_DIMS = 4
MAX_BYTES = 1 << 30  # no data set of this format comes near 1 GiB
CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"


def _bad(path: Path, problem: str) -> CorruptDataError:
    return CorruptDataError(f"{path} is not a valid IDX file: {problem}; fetch the data set again")


def read_header(f: BinaryIO, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape an IDX header announces, checked."""
    magic = f.read(4)
    if len(magic) < 4:
        raise _bad(path, "it is shorter than its 4-byte header")
    zero, code, ndim = struct.unpack(">HBB", magic)
    if zero != 0 or code not in TYPES:
        raise _bad(path, f"magic number 0x{magic.hex()} is not an IDX one")
    if not 1 <= ndim <= MAX_DIMS:
        raise _bad(path, f"{ndim} dims (1 to {MAX_DIMS} expected)")
    raw = f.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise _bad(path, "its header is cut short")
    shape = struct.unpack(f">{ndim}I", raw)
    if 0 in shape:
        raise _bad(path, f"shape {shape} has an empty dim")
    return np.dtype(TYPES[code]), shape


def _read_exactly(f: BinaryIO, size: int, path: Path) -> bytes:
    """``size`` bytes read chunk by chunk (memory grows with what the file really holds)."""
    chunks, have = [], 0
    while have < size:
        chunk = f.read(min(CHUNK, size - have))
        if not chunk:
            raise _bad(path, f"it holds {have} bytes of data, its header announces {size}")
        chunks.append(chunk)
        have += len(chunk)
    if f.read(1):
        raise _bad(path, f"it holds more data than the {size} bytes its header announces")
    return b"".join(chunks)


def read_idx(path: str | Path, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """The array an IDX file (gzipped or not) holds, in native byte order."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            zipped = raw.read(2) == GZIP_MAGIC
        opener = gzip.open if zipped else open
        with opener(path, "rb") as f:
            dtype, shape = read_header(f, path)
            size = math.prod(shape) * dtype.itemsize
            if size > max_bytes:
                raise _bad(path, f"its header announces {size} bytes (at most {max_bytes})")
            if not zipped and path.stat().st_size != 4 + 4 * len(shape) + size:
                have = path.stat().st_size - 4 - 4 * len(shape)
                raise _bad(path, f"it holds {have} bytes of data, its header announces {size}")
            data = _read_exactly(f, size, path)
    except (OSError, EOFError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise _bad(path, f"{type(err).__name__}: {err}") from err
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
