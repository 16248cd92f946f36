"""tokenizer_check.py: checks common/tokenizer.h (through build/tok_tool) against the
sentencepiece library itself. Run with Debian's python3 (it has the sentencepiece module).

  tokenizer_check.py luts MODEL TOK_TOOL [VOCAB_SIZE]   every id: piece, type and the three
                                                        byte-count tables as the reference
                                                        computes them with sentencepiece
  tokenizer_check.py decode MODEL TOK_TOOL              our decode(sp.encode(text)) == sp.decode
                                                        for sample texts and random id sequences
  tokenizer_check.py mutate SRC DST                     copy of a model with a few pieces turned
                                                        UNUSED (training never makes those)
  tokenizer_check.py mkbad SRC DIR                      malformed model files for check_fail
  tokenizer_check.py robust SRC TOK_TOOL DIR            truncations and byte flips of SRC: every
                                                        one loads or fails with one clean line

Exits non-zero with a message on the first mismatch.
"""
import os
import random
import subprocess
import sys

import sentencepiece as spm

SPACE = "\u2581"


def die(msg):
    print("FAIL: " + msg)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# a tiny protobuf wire-format writer/reader (enough to build and edit model files)

def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def field_varint(num, v):
    return varint(num << 3 | 0) + varint(v)


def field_fixed32(num, raw4):
    return varint(num << 3 | 5) + raw4


def read_varint(b, pos):
    v, shift = 0, 0
    while True:
        c = b[pos]
        pos += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, pos


def split_fields(b):
    """Top-level fields of a well-formed message: list of (num, wire, raw bytes of the field)."""
    fields, pos = [], 0
    while pos < len(b):
        start = pos
        key, pos = read_varint(b, pos)
        wire = key & 7
        if wire == 0:
            _, pos = read_varint(b, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            n, pos = read_varint(b, pos)
            pos += n
        elif wire == 5:
            pos += 4
        else:
            raise ValueError("wire type %d" % wire)
        fields.append((key >> 3, wire, b[start:pos]))
    return fields


def payload_of(raw):
    """The payload of a raw length-delimited field."""
    _, pos = read_varint(raw, 0)
    n, pos = read_varint(raw, pos)
    return raw[pos:pos + n]


# ---------------------------------------------------------------------------------------------
# the reference tables, computed the way the reference's build_sentencepiece_luts does

def reference_rows(sp, vocab_size):
    n = sp.vocab_size()
    rows = []
    for i in range(max(n, vocab_size)):
        if i >= n:
            rows.append(("none", 0, 0, 1, ""))
            continue
        piece = sp.id_to_piece(i)
        if sp.is_control(i):
            t = "control"
        elif sp.is_unknown(i):
            t = "unknown"
        elif sp.is_unused(i):
            t = "unused"
        elif sp.is_byte(i):
            t = "byte"
        else:
            t = "normal"  # or user_defined: the library has no is_user_defined; see below
        base, space, boundary = 0, 0, 1
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)):
            boundary = 0
            if sp.is_byte(i):
                base = 1
            else:
                p = piece
                if p.startswith(SPACE):
                    space = 1
                    p = p[1:]
                base = len(p.encode("utf-8"))
        rows.append((t, base, space, boundary, piece))
    return rows


TYPE_NUMBERS = {"normal": 1, "unknown": 2, "control": 3, "user_defined": 4, "unused": 5, "byte": 6}


def raw_types(model):
    """Piece types straight from the file (NORMAL when the field is absent)."""
    types = []
    for num, wire, raw in split_fields(open(model, "rb").read()):
        if num == 1:
            t = [f for f in split_fields(payload_of(raw)) if f[0] == 3]
            types.append(read_varint(t[-1][2], 1)[0] if t else 1)
    return types


def escape(piece):
    out = []
    for ch in piece:
        if ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\x%02X" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def cmd_luts(model, tool, vocab_size=0):
    sp = spm.SentencePieceProcessor(model_file=model)
    want = reference_rows(sp, vocab_size)
    # the python API has no is_user_defined; those pieces behave as normal ones in the tables,
    # and we take the distinction from the file itself (read by the little parser above)
    raw = raw_types(model)
    out = subprocess.run([tool, "dump", model] + ([str(vocab_size)] if vocab_size else []),
                         capture_output=True)
    if out.returncode != 0:
        die("tok_tool dump %s failed: %s" % (model, out.stderr.decode(errors="replace")))
    lines = out.stdout.decode("utf-8").split("\n")
    if lines[-1] != "":
        die("dump does not end with a newline")
    lines = lines[:-1]
    if len(lines) != len(want):
        die("dump has %d lines, sentencepiece says %d ids" % (len(lines), len(want)))
    counts = {}
    for i, (line, w) in enumerate(zip(lines, want)):
        cols = line.split("\t")
        if len(cols) != 6:
            die("line %d: %d columns: %r" % (i, len(cols), line))
        got = (cols[1], int(cols[2]), int(cols[3]), int(cols[4]), cols[5])
        wt, wb, ws, wd, wp = w
        if wt == "normal" and i < len(raw) and raw[i] == 4:
            wt = "user_defined"
        if i < len(raw) and TYPE_NUMBERS[wt] != raw[i]:
            die("id %d: sentencepiece says %s, the file says type %d" % (i, wt, raw[i]))
        if got != (wt, wb, ws, wd, escape(wp)) or int(cols[0]) != i:
            die("id %d: ours %r, sentencepiece %r" % (i, (cols[0],) + got, (i, wt, wb, ws, wd, escape(wp))))
        counts[got[0]] = counts.get(got[0], 0) + 1
    print("%s: %d ids match (%s)" % (os.path.basename(model), len(lines),
                                      ", ".join("%s %d" % kv for kv in sorted(counts.items()))))


# ---------------------------------------------------------------------------------------------
# decode

SAMPLES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space and trailing space ",
    "  two  spaces\tand a tab",
    "line one\nline two\n\nline four",
    "digits 0123456789 and 3.14159, 2026-03-22",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe",
    "\u65e5\u672c\u8a9e \u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u2603 emoji \U0001F600!",
    "punctuation: ()[]{}<>!?;:'\"`~@#$%^&*-_=+\\|/",
    "a",
    "",
]


def run_decode(tool, model, ids):
    out = subprocess.run([tool, "decode", model], input=" ".join(map(str, ids)).encode(), capture_output=True)
    if out.returncode != 0:
        die("tok_tool decode failed on %r: %s" % (ids, out.stderr.decode(errors="replace")))
    return out.stdout


def cmd_decode(model, tool):
    sp = spm.SentencePieceProcessor(model_file=model)
    n = sp.vocab_size()
    cases = [("text %r" % t, sp.encode(t)) for t in SAMPLES]
    # random id sequences hit what real text rarely does: control/unknown pieces anywhere,
    # byte pieces that do not form UTF-8, several leading "▁" pieces
    rng = random.Random(1234)
    byte_ids = [i for i in range(n) if sp.is_byte(i)]
    special = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    space_ids = [i for i in range(n) if sp.id_to_piece(i).startswith(SPACE)]
    for k in range(60):
        length = rng.randint(1, 12)
        pool = [range(n), byte_ids or range(n), special, space_ids]
        ids = [rng.choice(rng.choice(pool)) for _ in range(length)]
        cases.append(("random ids %r" % ids, ids))
    cases.append(("empty", []))
    for name, ids in cases:
        want = sp.decode(ids).encode("utf-8")
        got = run_decode(tool, model, ids)
        if got != want:
            die("%s: %s: ours %r, sentencepiece %r" % (os.path.basename(model), name, got, want))
    print("%s: %d decodes match" % (os.path.basename(model), len(cases)))


# ---------------------------------------------------------------------------------------------
# model edits

def cmd_mutate(src, dst):
    """Turn a few normal pieces into UNUSED: a model sentencepiece still loads."""
    data = open(src, "rb").read()
    out = bytearray()
    k = 0
    for num, wire, raw in split_fields(data):
        if num == 1:
            piece_fields = split_fields(payload_of(raw))
            types = [f for f in piece_fields if f[0] == 3]
            t = read_varint(types[0][2], 1)[0] if types else 1
            if t == 1 and k % 37 == 5:
                piece_fields = [f for f in piece_fields if f[0] != 3]
                body = b"".join(f[2] for f in piece_fields) + field_varint(3, 5)
                raw = field_bytes(1, body)
            k += 1
        out += raw
    open(dst, "wb").write(bytes(out))
    sp = spm.SentencePieceProcessor(model_file=dst)
    unused = sum(sp.is_unused(i) for i in range(sp.vocab_size()))
    if unused == 0:
        die("mutate: no unused pieces made")


def piece_msg(piece, type_=None, score=b"\0\0\0\0"):
    body = field_bytes(1, piece) + field_fixed32(2, score)
    if type_ is not None:
        body += field_varint(3, type_)
    return field_bytes(1, body)


def cmd_mkbad(src, d):
    data = open(src, "rb").read()
    rng = random.Random(7)
    good = piece_msg(b"<unk>", 2) + piece_msg(b"\xe2\x96\x81a") + piece_msg(b"b")
    bad = {
        "empty.model": b"",
        "trunc1.model": data[:1],  # a key, then nothing
        "trunc10.model": data[:10],  # inside the first piece
        "trunc_end.model": data[:-1],  # inside the last field
        "garbage.model": bytes(rng.getrandbits(8) for _ in range(4096)),
        "text.model": b"this is a text file, not a model\n" * 20,
        # protobufs, but not SentencePiece models
        "nopieces.model": field_varint(5, 1) + field_bytes(7, b"hello") + field_fixed32(9, b"abcd"),
        "nostring.model": field_bytes(1, field_fixed32(2, b"\0\0\0\0")),
        "emptypiece.model": good + piece_msg(b""),
        "badutf8.model": good + piece_msg(b"ab\xff"),
        "badbyte.model": good + piece_msg(b"<0xZZ>", 6),
        "lowerbyte.model": good + piece_msg(b"<0xab>", 6),
        "badtype.model": good + piece_msg(b"c", 9),
        "dup.model": good + piece_msg(b"b"),
        "wirepiece.model": good + field_varint(1, 3),  # pieces must be length-delimited
        "wirescore.model": good + field_bytes(1, field_bytes(1, b"c") + field_varint(2, 1)),
        "group.model": good + varint(4 << 3 | 3),  # deprecated start-group wire type
        "wire7.model": good + varint(4 << 3 | 7),
        "field0.model": good + varint(0 << 3 | 0) + varint(1),
        "longvarint.model": good + varint(4 << 3 | 0) + b"\xff" * 11 + b"\x01",
        "pastend.model": good + varint(1 << 3 | 2) + varint(1000) + b"xyz",
        "fixed64.model": good + varint(6 << 3 | 1) + b"1234567",  # one byte short
    }
    os.makedirs(d, exist_ok=True)
    for name, b in bad.items():
        open(os.path.join(d, name), "wb").write(b)
    # a sanity check of the builder: the hand-made good model loads in both
    open(os.path.join(d, "good.model"), "wb").write(good)


# ---------------------------------------------------------------------------------------------
# robustness: cuts and byte flips must load or fail cleanly (status 1, one "error: FILE:" line)

def cmd_robust(src, tool, d):
    data = open(src, "rb").read()
    boundaries = set()
    pos = 0
    for _, _, raw in split_fields(data):
        pos += len(raw)
        boundaries.add(pos)
    rng = random.Random(99)
    os.makedirs(d, exist_ok=True)
    cases = []
    for cut in sorted(set([rng.randrange(1, len(data)) for _ in range(120)] + sorted(boundaries)[:3])):
        cases.append(("cut%d" % cut, data[:cut], cut in boundaries))
    for k in range(120):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.getrandbits(8)
        cases.append(("flip%d" % k, bytes(b), None))
    loaded = failed = 0
    for name, b, should_load in cases:
        path = os.path.join(d, name + ".model")
        open(path, "wb").write(b)
        out = subprocess.run([tool, "dump", path], capture_output=True)
        err = out.stderr.decode(errors="replace")
        if out.returncode == 0:
            if should_load is False:
                die("%s: a cut inside a field loaded" % name)
            loaded += 1
        elif out.returncode == 1:
            if should_load:
                die("%s: a cut at a field boundary failed: %s" % (name, err))
            if not (err.startswith("error: " + path + ": ") and err.count("\n") == 1):
                die("%s: error is not one line naming the file: %r" % (name, err))
            failed += 1
        else:
            die("%s: exit status %d: %r" % (name, out.returncode, err))
        os.remove(path)
    print("%d damaged models: %d loaded, %d failed cleanly" % (len(cases), loaded, failed))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "luts":
        cmd_luts(args[0], args[1], int(args[2]) if len(args) > 2 else 0)
    elif cmd == "decode":
        cmd_decode(args[0], args[1])
    elif cmd == "mutate":
        cmd_mutate(args[0], args[1])
    elif cmd == "mkbad":
        cmd_mkbad(args[0], args[1])
    elif cmd == "robust":
        cmd_robust(args[0], args[1], args[2])
    else:
        die("unknown command " + cmd)
