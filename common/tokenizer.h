// tokenizer.h: the SentencePiece tokenizer, read by hand from its `.model` file, and the
// per-token byte counts that turn a loss in nats per token into bits per byte.
//
// Training and scoring never tokenize text (the shards are already token ids); they need, per id:
//   - its piece and type, to print and to decode ids back to text (for samples and tests);
//   - the byte-count lookup tables of docs/RECIPE.md ("Scoring"):
//       base_bytes[id]    UTF-8 bytes of the piece without its leading U+2581, 1 for <0xAB>
//                         byte pieces, 0 for boundary tokens;
//       leading_space[id] the piece started with U+2581 ("▁", SentencePiece's space);
//       boundary[id]      control, unknown and unused pieces (and ids past the tokenizer):
//                         they stand for no text at all.
//     The bytes of a scored target are base_bytes[tgt] + (leading_space[tgt] && !boundary[prev]):
//     the space is only real text when something came before it.
//
// The `.model` file is a serialized protobuf `ModelProto`. Rather than pull in protobuf we read
// the wire format ourselves; it is small:
//
//   message   := field*
//   field     := key value          key = varint (field_number << 3 | wire_type)
//   wire_type 0: varint             7 bits per byte, low groups first, high bit = "more"
//             1: fixed64            8 bytes little-endian
//             2: length-delimited   varint length, then that many bytes (strings, sub-messages)
//             5: fixed32            4 bytes little-endian (floats)
//             (3 and 4 are the long-deprecated groups; nothing here uses them, so we reject them)
//
//   ModelProto      1: repeated SentencePiece pieces     (what we need)
//                   2: TrainerSpec                       (unk/bos/eos/pad ids, unk_surface)
//                   3: NormalizerSpec                    (add_dummy_prefix, remove_extra_whitespaces)
//                   anything else: skipped
//   SentencePiece   1: piece (string)  2: score (float)  3: type (enum, NORMAL when absent)
//
// Every read is bounds-checked and every problem is reported (never a crash), since a model
// file is input like any other: tokenizer_parse() returns false with a message (this is the
// entry point a fuzzer drives), tokenizer_load() turns that into one fatal line naming the file.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <functional>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "utils.h"

// SentencePiece's piece types (the values of ModelProto.SentencePiece.Type).
enum PieceType {
    PIECE_NORMAL = 1,
    PIECE_UNKNOWN = 2,
    PIECE_CONTROL = 3,
    PIECE_USER_DEFINED = 4,
    PIECE_UNUSED = 5,
    PIECE_BYTE = 6,
};

inline const char *piece_type_name(int type) {
    switch (type) {
    case PIECE_NORMAL: return "normal";
    case PIECE_UNKNOWN: return "unknown";
    case PIECE_CONTROL: return "control";
    case PIECE_USER_DEFINED: return "user_defined";
    case PIECE_UNUSED: return "unused";
    case PIECE_BYTE: return "byte";
    default: return "none"; // an id past the tokenizer (see tokenizer_dump)
    }
}

struct Tokenizer {
    std::string path;
    std::vector<std::string> pieces; // (V,) UTF-8, U+2581 standing for a space
    std::vector<float> scores;       // (V,) merge/piece scores (unused by us, kept for the dump)
    std::vector<int> types;          // (V,) PieceType
    // from TrainerSpec (protobuf defaults when absent); -1 = none
    int unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
    std::string unk_surface = " \xE2\x81\x87 "; // what an unknown piece decodes to: " ⁇ "
    // from NormalizerSpec: decoding drops the space of the first piece when either is set
    bool add_dummy_prefix = true, remove_extra_whitespaces = true;
    int size() const { return (int)pieces.size(); }
};

// ----------------------------------------------------------------------------
// UTF-8 and byte pieces

// Length of the one well-formed UTF-8 character at s[0..n), or 0 if there is none there
// (bad lead byte, missing/bad continuation bytes, overlong form, surrogate, past U+10FFFF).
inline int utf8_char_len(const uint8_t *s, size_t n) {
    if (n == 0) return 0;
    uint8_t b = s[0];
    int len;
    uint32_t cp, min_cp;
    if (b < 0x80) return 1;
    else if ((b & 0xE0) == 0xC0) { len = 2; cp = b & 0x1F; min_cp = 0x80; }
    else if ((b & 0xF0) == 0xE0) { len = 3; cp = b & 0x0F; min_cp = 0x800; }
    else if ((b & 0xF8) == 0xF0) { len = 4; cp = b & 0x07; min_cp = 0x10000; }
    else return 0; // a continuation byte or 0xF8..0xFF cannot start a character
    if (n < (size_t)len) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

inline bool utf8_valid(const std::string &s) {
    const uint8_t *p = (const uint8_t *)s.data();
    size_t n = s.size(), i = 0;
    while (i < n) {
        int k = utf8_char_len(p + i, n - i);
        if (k == 0) return false;
        i += k;
    }
    return true;
}

// The byte of a byte piece "<0xAB>" (upper-case hex, exactly as SentencePiece writes them), or -1.
inline int byte_piece_value(const std::string &piece) {
    if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = piece[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static const char kSpaceSymbol[] = "\xE2\x96\x81"; // U+2581 "▁", 3 bytes in UTF-8

inline bool starts_with_space_symbol(const std::string &s) { return s.compare(0, 3, kSpaceSymbol) == 0; }

// ----------------------------------------------------------------------------
// protobuf wire format: a reader over [p + pos, p + end) that never reads past `end`.
// Offsets in messages are from the start of the file (`base` is where this range starts).

struct PbReader {
    const uint8_t *p;
    size_t pos, end;
    std::string *err;

    bool fail(const std::string &msg) {
        if (err && err->empty()) *err = msg;
        return false;
    }
    bool at_end() const { return pos >= end; }

    bool varint(uint64_t *out) {
        uint64_t v = 0;
        size_t start = pos;
        for (int i = 0; i < 10; i++) {
            if (pos >= end) return fail("truncated varint at offset " + std::to_string(start));
            uint8_t b = p[pos++];
            // the 10th byte holds bit 63 only: anything more does not fit in 64 bits
            if (i == 9 && b > 1) return fail("varint too long at offset " + std::to_string(start));
            v |= (uint64_t)(b & 0x7F) << (7 * i);
            if (!(b & 0x80)) { *out = v; return true; }
        }
        return fail("varint too long at offset " + std::to_string(start));
    }
    bool fixed32(uint32_t *out) {
        if (end - pos < 4) return fail("truncated fixed32 at offset " + std::to_string(pos));
        *out = get_u32le(p + pos);
        pos += 4;
        return true;
    }
    // a length-delimited value: its bytes are [*start, *start + *len)
    bool bytes(size_t *start, size_t *len) {
        size_t at = pos;
        uint64_t n;
        if (!varint(&n)) return false;
        if (n > end - pos)
            return fail("length " + std::to_string(n) + " at offset " + std::to_string(at) + " runs past the end (" +
                        std::to_string(end - pos) + " bytes left)");
        *start = pos;
        *len = (size_t)n;
        pos += (size_t)n;
        return true;
    }
    // the next field's key; false at a malformed key (check at_end() first)
    bool key(uint32_t *field, int *wire) {
        size_t at = pos;
        uint64_t k;
        if (!varint(&k)) return false;
        if (k > 0xFFFFFFFFu || (k >> 3) == 0)
            return fail("bad field number " + std::to_string(k >> 3) + " at offset " + std::to_string(at));
        *field = (uint32_t)(k >> 3);
        *wire = (int)(k & 7);
        if (*wire != 0 && *wire != 1 && *wire != 2 && *wire != 5)
            return fail("bad wire type " + std::to_string(*wire) + " at offset " + std::to_string(at));
        return true;
    }
    // skip a value we do not care about
    bool skip(int wire) {
        uint64_t v;
        size_t s, n;
        switch (wire) {
        case 0: return varint(&v);
        case 1:
            if (end - pos < 8) return fail("truncated fixed64 at offset " + std::to_string(pos));
            pos += 8;
            return true;
        case 2: return bytes(&s, &n);
        case 5:
            if (end - pos < 4) return fail("truncated fixed32 at offset " + std::to_string(pos));
            pos += 4;
            return true;
        default: return fail("bad wire type " + std::to_string(wire)); // key() already rejects these
        }
    }
    // a sub-message reader over [start, start + len)
    PbReader sub(size_t start, size_t len) const { return PbReader{p, start, start + len, err}; }
};

// A field with a known number but the wrong wire type is a malformed model, not something to skip.
inline bool pb_expect_wire(PbReader &r, const char *what, int wire, int want) {
    if (wire == want) return true;
    return r.fail(std::string(what) + " has wire type " + std::to_string(wire) + ", expected " + std::to_string(want) +
                  " (offset " + std::to_string(r.pos) + ")");
}

// Read a varint-valued int32 field (enums and ids are stored as sign-extended 64-bit varints).
inline bool pb_int32(PbReader &r, const char *what, int wire, int *out) {
    uint64_t v;
    if (!pb_expect_wire(r, what, wire, 0) || !r.varint(&v)) return false;
    *out = (int)(int32_t)(uint32_t)v;
    return true;
}

// TrainerSpec: we only pick the special ids and the unknown piece's surface.
inline bool tokenizer_parse_trainer_spec(Tokenizer &tok, PbReader r) {
    while (!r.at_end()) {
        uint32_t field;
        int wire;
        if (!r.key(&field, &wire)) return false;
        bool ok;
        if (field == 40) ok = pb_int32(r, "trainer_spec.unk_id", wire, &tok.unk_id);
        else if (field == 41) ok = pb_int32(r, "trainer_spec.bos_id", wire, &tok.bos_id);
        else if (field == 42) ok = pb_int32(r, "trainer_spec.eos_id", wire, &tok.eos_id);
        else if (field == 43) ok = pb_int32(r, "trainer_spec.pad_id", wire, &tok.pad_id);
        else if (field == 44) {
            size_t s, n;
            ok = pb_expect_wire(r, "trainer_spec.unk_surface", wire, 2) && r.bytes(&s, &n);
            if (ok) tok.unk_surface.assign((const char *)r.p + s, n);
        } else ok = r.skip(wire);
        if (!ok) return false;
    }
    return true;
}

// NormalizerSpec: the two flags that decide whether decoding drops the first piece's space.
inline bool tokenizer_parse_normalizer_spec(Tokenizer &tok, PbReader r) {
    while (!r.at_end()) {
        uint32_t field;
        int wire;
        if (!r.key(&field, &wire)) return false;
        bool ok;
        int v = 0;
        if (field == 3) { ok = pb_int32(r, "normalizer_spec.add_dummy_prefix", wire, &v); tok.add_dummy_prefix = v != 0; }
        else if (field == 4) { ok = pb_int32(r, "normalizer_spec.remove_extra_whitespaces", wire, &v); tok.remove_extra_whitespaces = v != 0; }
        else ok = r.skip(wire);
        if (!ok) return false;
    }
    return true;
}

// One ModelProto.SentencePiece: appends its piece, score and type.
inline bool tokenizer_parse_piece(Tokenizer &tok, PbReader r) {
    int id = tok.size();
    std::string piece;
    bool has_piece = false;
    float score = 0.0f;
    int type = PIECE_NORMAL;
    std::string what = "piece " + std::to_string(id);
    while (!r.at_end()) {
        uint32_t field;
        int wire;
        if (!r.key(&field, &wire)) return false;
        bool ok;
        if (field == 1) {
            size_t s, n;
            ok = pb_expect_wire(r, (what + " string").c_str(), wire, 2) && r.bytes(&s, &n);
            if (ok) { piece.assign((const char *)r.p + s, n); has_piece = true; }
        } else if (field == 2) {
            uint32_t bits;
            ok = pb_expect_wire(r, (what + " score").c_str(), wire, 5) && r.fixed32(&bits);
            if (ok) memcpy(&score, &bits, 4);
        } else if (field == 3) {
            ok = pb_int32(r, (what + " type").c_str(), wire, &type);
            if (ok && (type < PIECE_NORMAL || type > PIECE_BYTE))
                return r.fail(what + " has unknown type " + std::to_string(type));
        } else ok = r.skip(wire);
        if (!ok) return false;
    }
    if (!has_piece) return r.fail(what + " has no piece string");
    if (piece.empty()) return r.fail(what + " is an empty string");
    if (!utf8_valid(piece)) return r.fail(what + " is not valid UTF-8");
    if (type == PIECE_BYTE && byte_piece_value(piece) < 0)
        return r.fail(what + " is a byte piece but not of the form <0xHH>");
    tok.pieces.push_back(piece);
    tok.scores.push_back(score);
    tok.types.push_back(type);
    return true;
}

// Parse a whole `.model` file image. On failure returns false with a one-line reason in *err
// (tok is then partly filled and must not be used).
inline bool tokenizer_parse(Tokenizer &tok, const uint8_t *data, size_t n, std::string *err) {
    std::string local_err;
    if (err == nullptr) err = &local_err;
    err->clear();
    tok.pieces.clear(); tok.scores.clear(); tok.types.clear();
    if (n == 0) { *err = "empty file"; return false; }
    PbReader r{data, 0, n, err};
    while (!r.at_end()) {
        uint32_t field;
        int wire;
        if (!r.key(&field, &wire)) return false;
        if (field == 1 || field == 2 || field == 3) {
            const char *name = field == 1 ? "a piece" : field == 2 ? "trainer_spec" : "normalizer_spec";
            size_t s, len;
            if (!pb_expect_wire(r, name, wire, 2) || !r.bytes(&s, &len)) return false;
            bool ok = field == 1 ? tokenizer_parse_piece(tok, r.sub(s, len))
                    : field == 2 ? tokenizer_parse_trainer_spec(tok, r.sub(s, len))
                                 : tokenizer_parse_normalizer_spec(tok, r.sub(s, len));
            if (!ok) return false;
        } else if (!r.skip(wire)) return false;
        // a real model has ~1e3..1e5 pieces; refuse absurd counts before they eat memory
        if (tok.size() > (1 << 24)) { *err = "more than 2^24 pieces"; return false; }
    }
    if (tok.size() == 0) { *err = "no pieces (a protobuf, but not a SentencePiece model)"; return false; }
    // SentencePiece itself refuses models with a repeated piece: ids would be ambiguous
    std::unordered_set<std::string> seen;
    for (int i = 0; i < tok.size(); i++)
        if (!seen.insert(tok.pieces[i]).second) { *err = "piece " + std::to_string(i) + " repeats an earlier piece"; return false; }
    return true;
}

// Load a `.model` file; fatal (exit 1, one line naming the file) on any problem.
inline void tokenizer_load(Tokenizer &tok, const char *path) {
    long long size = file_size(path);
    if (size < 0) fatal("%s: no such tokenizer file HINT: pass the SentencePiece .model file", path);
    if (size == 0) fatal("%s: empty file, not a SentencePiece model", path);
    std::vector<uint8_t> bytes = read_file_bytes(path);
    std::string err;
    if (!tokenizer_parse(tok, bytes.data(), bytes.size(), &err))
        fatal("%s: not a valid SentencePiece model: %s", path, err.c_str());
    tok.path = path;
}

// ----------------------------------------------------------------------------
// byte-count lookup tables (see the top of this file)

struct ByteLuts {
    std::vector<int> base_bytes;          // (table,) UTF-8 bytes of the piece, sans leading "▁"
    std::vector<uint8_t> leading_space;   // (table,) 1 if the piece starts with "▁"
    std::vector<uint8_t> boundary;        // (table,) 1 for control/unknown/unused/out-of-range ids
};

// Tables of max(vocab_size, tok.size()) entries: the model's vocab may be padded past the
// tokenizer; those ids never occur in data and count as boundary tokens of 0 bytes.
inline ByteLuts tokenizer_byte_luts(const Tokenizer &tok, int vocab_size) {
    int table = vocab_size > tok.size() ? vocab_size : tok.size();
    ByteLuts l;
    l.base_bytes.assign(table, 0);
    l.leading_space.assign(table, 0);
    l.boundary.assign(table, 1);
    for (int id = 0; id < tok.size(); id++) {
        int type = tok.types[id];
        if (type == PIECE_CONTROL || type == PIECE_UNKNOWN || type == PIECE_UNUSED) continue;
        l.boundary[id] = 0;
        if (type == PIECE_BYTE) { l.base_bytes[id] = 1; continue; } // one raw byte, never a space
        const std::string &p = tok.pieces[id];
        bool space = starts_with_space_symbol(p);
        l.leading_space[id] = space;
        l.base_bytes[id] = (int)p.size() - (space ? 3 : 0);
    }
    return l;
}

// ----------------------------------------------------------------------------
// decoding ids back to text, as SentencePiece's decoder does:
//   - normal/user-defined pieces: the piece with every "▁" turned into a space, except that
//     the first piece of the text loses its leading "▁" (the dummy prefix the encoder added,
//     or whitespace the normalizer would have stripped). With remove_extra_whitespaces every
//     leading "▁" piece is dropped until some text has been produced; with only
//     add_dummy_prefix, just the first one;
//   - control pieces (<s>, </s>, <pad>): nothing;
//   - unknown: the unk surface, " ⁇ " by default;
//   - runs of byte pieces <0xAB>: their raw bytes, where each byte that is not part of a
//     well-formed UTF-8 character becomes U+FFFD (so the output is always valid UTF-8).
// Ids outside the tokenizer (a padded vocab) decode to nothing, like boundary tokens.

inline void tokenizer_flush_bytes(std::string &out, std::string &bytes) {
    const uint8_t *b = (const uint8_t *)bytes.data();
    size_t n = bytes.size(), i = 0;
    while (i < n) {
        int k = utf8_char_len(b + i, n - i);
        if (k == 0) { out += "\xEF\xBF\xBD"; i += 1; } // U+FFFD REPLACEMENT CHARACTER
        else { out.append(bytes, i, k); i += k; }
    }
    bytes.clear();
}

inline std::string tokenizer_decode(const Tokenizer &tok, const int *ids, size_t n) {
    std::string out, bytes;
    bool strip_first_space = tok.add_dummy_prefix || tok.remove_extra_whitespaces;
    bool at_start = true;        // no text yet (and no dummy-prefix space eaten yet)
    bool ate_space = false;      // the previous piece was the one whose leading space we dropped
    for (size_t i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= tok.size()) continue;
        int type = tok.types[id];
        if (type == PIECE_BYTE) { bytes.push_back((char)byte_piece_value(tok.pieces[id])); continue; }
        tokenizer_flush_bytes(out, bytes);
        if (ate_space || !out.empty()) at_start = false;
        ate_space = false;
        if (type == PIECE_CONTROL) continue;
        if (type == PIECE_UNKNOWN) { out += tok.unk_surface; continue; }
        const std::string &p = tok.pieces[id];
        size_t from = 0;
        if (at_start && strip_first_space && starts_with_space_symbol(p)) {
            from = 3;
            ate_space = !tok.remove_extra_whitespaces;
        }
        for (size_t j = from; j < p.size();) {
            if (p.compare(j, 3, kSpaceSymbol) == 0) { out += ' '; j += 3; }
            else out += p[j++];
        }
    }
    tokenizer_flush_bytes(out, bytes);
    return out;
}

// ----------------------------------------------------------------------------
// encoding text to ids (the prompt of `eval --sample`), as SentencePiece encodes with a BPE model:
//   1. whitespace: ASCII tabs and line breaks are spaces; with remove_extra_whitespaces, leading and trailing spaces go and runs of
//      spaces become one; with add_dummy_prefix a space is put in front; every space becomes "▁".
//      (SentencePiece also applies its NFKC normalization table first; we do not, so text that
//      NFKC would change - compatibility characters, full-width forms, ligatures - may encode
//      differently. Plain text, accents and CJK are NFKC-stable.)
//   2. symbols: one per UTF-8 character, except that user-defined pieces match as a whole
//      (longest first) and never merge further.
//   3. merges: while some adjacent pair concatenates to a piece (normal, user-defined or unused),
//      merge the pair whose piece has the highest score, the leftmost one on a tie.
//   4. ids: a symbol that is a piece gets its id, except unused pieces made by a merge, which are
//      split back into the two symbols they were merged from; otherwise, with byte pieces in the model (byte
//      fallback) one <0xAB> piece per byte, else the unknown id, one for each run of unknowns.

inline std::vector<int> tokenizer_encode(const Tokenizer &tok, const std::string &text) {
    std::unordered_map<std::string, int> ids;  // the pieces merges may produce
    std::vector<int> byte_id(256, -1);
    std::vector<std::string> user;  // user-defined pieces, matched whole
    for (int i = 0; i < tok.size(); i++) {
        int t = tok.types[i];
        if (t == PIECE_NORMAL || t == PIECE_USER_DEFINED || t == PIECE_UNUSED) ids.emplace(tok.pieces[i], i);
        if (t == PIECE_USER_DEFINED) user.push_back(tok.pieces[i]);
        if (t == PIECE_BYTE) byte_id[byte_piece_value(tok.pieces[i])] = i;
    }
    const bool byte_fallback = byte_id[0] >= 0;
    // 1. whitespace
    std::string norm;
    for (char ch : text) {
        if (ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f') ch = ' ';  // as NFKC's table does
        if (ch == ' ' && tok.remove_extra_whitespaces && (norm.empty() || norm.back() == ' ')) continue;
        norm += ch;
    }
    if (tok.remove_extra_whitespaces) while (!norm.empty() && norm.back() == ' ') norm.pop_back();
    if (norm.empty()) return {};
    if (tok.add_dummy_prefix) norm = " " + norm;
    std::string s;
    for (char ch : norm) { if (ch == ' ') s += kSpaceSymbol; else s += ch; }
    // 2. symbols (a bad UTF-8 byte is a symbol of its own: it can only become bytes or unknown).
    // Every symbol is a node of the merge tree, so an unused piece can be split back.
    struct Node { std::string text; int left, right; };  // left/right: the nodes it merged from, -1 for none
    std::vector<Node> nodes;
    std::vector<int> syms;       // the current segmentation, as node indices
    std::vector<uint8_t> frozen; // (per symbol) a user-defined piece: never merged
    const uint8_t *b = (const uint8_t *)s.data();
    for (size_t i = 0; i < s.size();) {
        size_t len = 0;
        for (const std::string &u : user)
            if (u.size() > len && s.compare(i, u.size(), u) == 0) len = u.size();
        frozen.push_back(len > 0);
        if (len == 0) len = std::max(utf8_char_len(b + i, s.size() - i), 1);
        nodes.push_back({s.substr(i, len), -1, -1});
        syms.push_back((int)nodes.size() - 1);
        i += len;
    }
    // 3. merges, best score first (a prompt is short: a linear scan per merge is plenty)
    for (;;) {
        int best = -1;
        float best_score = 0;
        for (size_t i = 0; i + 1 < syms.size(); i++) {
            if (frozen[i] || frozen[i + 1]) continue;
            auto it = ids.find(nodes[syms[i]].text + nodes[syms[i + 1]].text);
            if (it == ids.end()) continue;
            float sc = tok.scores[it->second];
            if (best < 0 || sc > best_score) { best = (int)i; best_score = sc; }
        }
        if (best < 0) break;
        nodes.push_back({nodes[syms[best]].text + nodes[syms[best + 1]].text, syms[best], syms[best + 1]});
        syms[best] = (int)nodes.size() - 1;
        syms.erase(syms.begin() + best + 1);
        frozen.erase(frozen.begin() + best + 1);
    }
    // 4. ids
    std::vector<int> out;
    bool last_unk = false;
    std::function<void(int)> emit = [&](int n) {
        const Node &nd = nodes[n];
        auto it = ids.find(nd.text);
        if (it != ids.end() && tok.types[it->second] == PIECE_UNUSED && nd.left >= 0) {
            emit(nd.left);
            emit(nd.right);
            return;
        }
        if (it != ids.end()) {  // (an unused piece that is a single character stays, as in SentencePiece)
            out.push_back(it->second);
            last_unk = false;
        } else if (byte_fallback) {
            for (unsigned char c : nd.text) out.push_back(byte_id[c]);
            last_unk = false;
        } else {
            if (!last_unk) out.push_back(tok.unk_id);
            last_unk = true;
        }
    };
    for (int n : syms) emit(n);
    return out;
}

// ----------------------------------------------------------------------------
// dump: one line per id, the contract for tests and `eval --dump-tokenizer`:
//   id <TAB> type <TAB> base_bytes <TAB> leading_space <TAB> boundary <TAB> piece
// type is normal/unknown/control/user_defined/byte/unused ("none" for ids past the tokenizer
// when vocab_size pads it). The piece is printed as is, except that a backslash becomes "\\"
// and control characters (< 0x20, 0x7F) become "\xHH", so every id stays on one line.

inline void tokenizer_dump(const Tokenizer &tok, FILE *out, int vocab_size = 0) {
    ByteLuts l = tokenizer_byte_luts(tok, vocab_size);
    for (int id = 0; id < (int)l.boundary.size(); id++) {
        bool in = id < tok.size();
        std::string esc;
        if (in) {
            for (unsigned char c : tok.pieces[id]) {
                if (c == '\\') esc += "\\\\";
                else if (c < 0x20 || c == 0x7F) { char h[8]; snprintf(h, sizeof h, "\\x%02X", c); esc += h; }
                else esc += (char)c;
            }
        }
        fprintf(out, "%d\t%s\t%d\t%d\t%d\t%s\n", id, piece_type_name(in ? tok.types[id] : 0), l.base_bytes[id],
                l.leading_space[id], l.boundary[id], esc.c_str());
    }
}
