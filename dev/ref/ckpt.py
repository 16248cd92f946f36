"""ckpt.py: read and write our checkpoint format (.ckpt, version 1) on torch tensors.

This is the Python half of the contract in notes/CKPT_FORMAT.md (the C++ half is
common/checkpoint.h). The layout, all integers little-endian, str16 = u16 length + UTF-8 bytes:

    offset 0   magic    8 bytes "PGCKPT\\r\\n"
           8   u32      version = 1
          12   u32      n_config, then n_config x { str16 key, str16 value }
               u32      n_tensors, then n_tensors x {
                            str16 name      the PyTorch state_dict name
                            u8    dtype     0 f32, 1 bf16, 2 f16, 3 i8, 4 i32, 5 i64
                            u8    ndim      0..4 (0 = a scalar, one element)
                            u64   dims[ndim]
                            bytes data      numel * itemsize, row-major, little-endian }
               u32      crc32 (zlib) of every byte before it
    and nothing after the crc.

The reader is strict: every problem raises ValueError("<path>: <problem>") with one line of
text. Structure is checked while parsing (so a cut file says "truncated"), the crc last.

    read_ckpt(path)                  -> (config: dict[str, str], tensors: OrderedDict[str, Tensor])
    write_ckpt(path, config, tensors)

As a command (for cross-checks with the C++ side):

    python3 dev/ref/ckpt.py dump FILE       one line per config entry and per tensor:
                                              config KEY VALUE
                                              tensor NAME DTYPE (d0,d1,...) CRC32-OF-DATA
    python3 dev/ref/ckpt.py verify FILE     read it (all checks), print "ok", exit 0
    python3 dev/ref/ckpt.py rewrite IN OUT  read IN, write OUT (byte-identical for a valid file)

Errors print "error: <file>: <problem>" on stderr and exit 1.
"""
import os
import struct
import sys
import zlib
from collections import OrderedDict

import numpy as np
import torch

import config as C  # noqa: E402  (dev/ref is on the path: this file lives there)

MAGIC = b"PGCKPT\r\n"
VERSION = 1
MAX_NDIM = 4

# dtype code -> (torch dtype, short name, numpy little-endian dtype used for the raw bytes).
# bf16 has no numpy type: its bytes travel as little-endian int16 and are reinterpreted.
DTYPES = {
    0: (torch.float32, "f32", "<f4"),
    1: (torch.bfloat16, "bf16", "<i2"),
    2: (torch.float16, "f16", "<f2"),
    3: (torch.int8, "i8", "i1"),
    4: (torch.int32, "i32", "<i4"),
    5: (torch.int64, "i64", "<i8"),
}
DTYPE_CODE = {torch_dtype: code for code, (torch_dtype, _, _) in DTYPES.items()}
DTYPE_NAME = {torch_dtype: name for (torch_dtype, name, _) in DTYPES.values()}


# ----------------------------------------------------------------------------
# tensor <-> raw bytes

def tensor_to_bytes(t):
    """Row-major little-endian bytes of a CPU copy of t (dtype kept)."""
    t = t.detach().to("cpu").contiguous()
    _, _, np_dtype = DTYPES[DTYPE_CODE[t.dtype]]
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().astype(np_dtype, copy=False).tobytes()


def tensor_from_bytes(buf, code, shape):
    """A fresh tensor (its own storage) of dtype `code` and `shape` from little-endian bytes."""
    torch_dtype, _, np_dtype = DTYPES[code]
    native = np.dtype(np_dtype).newbyteorder("=")
    arr = np.frombuffer(buf, dtype=np_dtype).astype(native)  # astype copies: own storage
    t = torch.from_numpy(arr).reshape(shape)
    if torch_dtype == torch.bfloat16:
        t = t.view(torch.bfloat16)
    return t


def data_crc(t):
    """crc32 of a tensor's stored bytes: what `dump` prints, to compare files tensor by tensor."""
    return zlib.crc32(tensor_to_bytes(t)) & 0xFFFFFFFF


# ----------------------------------------------------------------------------
# writer

def _str16(s, what):
    b = s.encode("utf-8")
    if len(b) > 0xFFFF:
        raise ValueError(f"{what} is longer than 65535 bytes")
    return struct.pack("<H", len(b)) + b


def encode_ckpt(config, tensors):
    """The whole file as bytes. config: mapping str -> str; tensors: ordered mapping name -> Tensor."""
    out = [MAGIC, struct.pack("<II", VERSION, len(config))]
    for key, value in config.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"config entries must be str -> str, got {key!r}: {value!r}")
        out.append(_str16(key, f"config key {key!r}"))
        out.append(_str16(value, f"config value of {key}"))
    out.append(struct.pack("<I", len(tensors)))
    seen = set()
    for name, t in tensors.items():
        if name in seen:  # only possible for non-dict inputs, but cheap to say
            raise ValueError(f"duplicate tensor name {name!r}")
        seen.add(name)
        if t.dtype not in DTYPE_CODE:
            raise ValueError(f"tensor {name}: dtype {t.dtype} has no code in the format")
        if t.dim() > MAX_NDIM:
            raise ValueError(f"tensor {name}: ndim {t.dim()} > {MAX_NDIM}")
        out.append(_str16(name, f"tensor name {name!r}"))
        out.append(struct.pack("<BB", DTYPE_CODE[t.dtype], t.dim()))
        out.append(struct.pack(f"<{t.dim()}Q", *t.shape))
        out.append(tensor_to_bytes(t))
    body = b"".join(out)
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def write_ckpt(path, config, tensors):
    """Write config (str -> str) and tensors (ordered name -> Tensor) to `path` (via path.tmp)."""
    data = encode_ckpt(config, tensors)
    tmp = str(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# reader

class _Reader:
    """Bounds-checked little-endian reader over bytes; every shortfall is 'truncated'."""

    def __init__(self, buf, path):
        self.buf, self.pos, self.path = buf, 0, path

    def fail(self, msg):
        raise ValueError(f"{self.path}: {msg}")

    def take(self, n, what):
        if n > len(self.buf) - self.pos:
            self.fail(f"truncated: {what} needs {n} bytes at offset {self.pos}, "
                      f"the file has {len(self.buf) - self.pos} left")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self, what):
        return self.take(1, what)[0]

    def u16(self, what):
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what):
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what):
        return struct.unpack("<Q", self.take(8, what))[0]

    def str16(self, what):
        raw = self.take(self.u16(what + " length"), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} at offset {self.pos - len(raw)} is not valid UTF-8")


def decode_ckpt(buf, path="<bytes>"):
    """Parse and validate a whole file's bytes; returns (config, tensors)."""
    r = _Reader(buf, path)
    magic = r.take(len(MAGIC), "magic")
    if magic != MAGIC:
        r.fail(f"bad magic {magic!r} (expected {MAGIC!r}): not a .ckpt file")
    version = r.u32("version")
    if version != VERSION:
        r.fail(f"unsupported version {version} (this reader knows version {VERSION})")
    config = {}
    for i in range(r.u32("n_config")):
        key = r.str16(f"config key {i}")
        value = r.str16(f"config value of {key}")
        if key in config:
            r.fail(f"duplicate config key {key!r}")
        config[key] = value
    tensors = OrderedDict()
    for i in range(r.u32("n_tensors")):
        name = r.str16(f"tensor name {i}")
        if name in tensors:
            r.fail(f"duplicate tensor name {name!r}")
        code = r.u8(f"dtype of {name}")
        if code not in DTYPES:
            r.fail(f"tensor {name}: unknown dtype code {code} (known: 0..{len(DTYPES) - 1})")
        ndim = r.u8(f"ndim of {name}")
        if ndim > MAX_NDIM:
            r.fail(f"tensor {name}: ndim {ndim} > {MAX_NDIM}")
        shape = tuple(r.u64(f"dims of {name}") for _ in range(ndim))
        numel = 1
        for d in shape:
            numel *= d  # Python ints do not overflow; the size check below catches absurd dims
        nbytes = numel * np.dtype(DTYPES[code][2]).itemsize
        tensors[name] = tensor_from_bytes(r.take(nbytes, f"data of {name} {list(shape)}"), code, shape)
    body_end = r.pos
    stored = r.u32("crc32")
    if r.pos != len(buf):
        r.fail(f"{len(buf) - r.pos} trailing bytes after the crc (file is {len(buf)} bytes)")
    actual = zlib.crc32(buf[:body_end]) & 0xFFFFFFFF
    if stored != actual:
        r.fail(f"crc mismatch: stored {stored:08x}, computed {actual:08x} (file corrupted)")
    return config, tensors


def read_ckpt(path):
    """Read a .ckpt file: (config dict str -> str, OrderedDict name -> Tensor in stored dtype)."""
    try:
        with open(path, "rb") as f:
            buf = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot open ({e.strerror})")
    return decode_ckpt(buf, path)


# ----------------------------------------------------------------------------
# command line

def shape_str(shape):
    return "(" + ",".join(str(d) for d in shape) + ")"


def main(argv):
    usage = ("usage: ckpt.py dump FILE | ckpt.py verify FILE | ckpt.py rewrite IN OUT")
    if len(argv) < 2 or argv[0] not in ("dump", "verify", "rewrite") or \
            (argv[0] == "rewrite") != (len(argv) == 3) or len(argv) > 3:
        print(usage, file=sys.stderr)
        return 2
    def run():
        config, tensors = read_ckpt(argv[1])
        if argv[0] == "dump":
            for key, value in config.items():
                print(f"config {key} {value}")
            for name, t in tensors.items():
                print(f"tensor {name} {DTYPE_NAME[t.dtype]} {shape_str(t.shape)} {data_crc(t):08x}")
        elif argv[0] == "verify":
            n = sum(t.numel() for t in tensors.values())
            print(f"ok: {len(config)} config entries, {len(tensors)} tensors, {n} elements")
        else:
            write_ckpt(argv[2], config, tensors)
    return C.cli_run(run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
