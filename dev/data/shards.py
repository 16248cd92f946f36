"""shards.py: read and write token shards in the FineWeb format (Python standard library only).

The format of the published parameter-golf FineWeb export, bit for bit (common/data.h reads it):

    bytes 0..1023   header: 256 little-endian int32
                      [0] = 20240520 (magic)  [1] = 1 (version)  [2] = token count  [3..255] = 0
    bytes 1024..    `count` little-endian uint16 token ids

so a valid file is exactly 1024 + 2*count bytes. Train shards are named fineweb_train_NNNNNN.bin,
validation shards fineweb_val_NNNNNN.bin (numbered from 0). Every document starts with BOS (id 1).

Shared by fineweb.py (checks what it downloads), tokenize_text.py and offline_data.py (write).
"""
import os
import struct
import sys
from array import array

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


class ShardError(Exception):
    """A file that is not a valid shard; the message names the file and the problem."""


def shard_name(split, index):
    return f"fineweb_{split}_{index:06d}.bin"


def shard_bytes(count):
    """The exact size of a shard holding `count` tokens."""
    return HEADER_BYTES + 2 * count


def header_bytes(count):
    return struct.pack("<3i", MAGIC, VERSION, count) + bytes(HEADER_BYTES - 12)


def read_header(path):
    """Check a shard's header against its file size; returns the token count."""
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: {size} bytes, too short for the {HEADER_BYTES}-byte shard header")
    with open(path, "rb") as f:
        magic, version, count = struct.unpack("<3i", f.read(12))
    if magic != MAGIC:
        raise ShardError(f"{path}: bad shard magic {magic} (expected {MAGIC}): not a token shard")
    if version != VERSION:
        raise ShardError(f"{path}: unsupported shard version {version} (expected {VERSION})")
    if count < 0 or size != shard_bytes(count):
        raise ShardError(f"{path}: header says {count} tokens = {shard_bytes(count)} bytes, file has {size} bytes")
    return count


def read_tokens(path):
    """All tokens of a shard as an array('H')."""
    count = read_header(path)
    tokens = array("H")
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        tokens.frombytes(f.read(2 * count))
    if sys.byteorder == "big":
        tokens.byteswap()
    return tokens


def write_shard(path, tokens):
    """Write an array('H') of tokens as a shard, atomically (a .tmp file renamed into place)."""
    if sys.byteorder == "big":
        tokens = array("H", tokens)
        tokens.byteswap()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header_bytes(len(tokens)))
        f.write(tokens.tobytes())
    os.replace(tmp, path)


class ShardWriter:
    """Writes one split's token stream as shards of `shard_tokens` tokens each (the last one shorter).

    Documents run on across shard boundaries, as in the published export, which simply cuts the
    stream every 100M tokens."""

    def __init__(self, out_dir, split, shard_tokens):
        assert shard_tokens > 0
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.buf = array("H")
        self.files = []  # (path, token count) of every shard written
        self.tokens = 0

    def add(self, ids):
        self.tokens += len(ids)
        pos = 0
        while pos < len(ids):
            take = min(self.shard_tokens - len(self.buf), len(ids) - pos)
            self.buf.extend(ids[pos:pos + take])
            pos += take
            if len(self.buf) == self.shard_tokens:
                self._flush()

    def _flush(self):
        if len(self.buf) == 0:
            return
        path = os.path.join(self.out_dir, shard_name(self.split, len(self.files)))
        write_shard(path, self.buf)
        self.files.append((path, len(self.buf)))
        self.buf = array("H")

    def close(self):
        self._flush()
        return self.files
