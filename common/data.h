// data.h: the FineWeb token shards, the training stream and the validation set.
//
// Shard format (the published parameter-golf FineWeb export, bit for bit):
//
//   bytes 0..1023   header: 256 little-endian int32
//                     [0] = 20240520 (magic)  [1] = 1 (version)  [2] = token count  [3..255] = 0
//   bytes 1024..    `count` little-endian uint16 token ids
//
// so a valid file is exactly 1024 + 2*count bytes. Train shards are fineweb_train_*.bin,
// validation shards fineweb_val_*.bin, each set read in name order. Every document starts with
// BOS (id 1) and documents simply run on across shard boundaries.
//
// The training stream is one cursor through the train shards, in order, wrapping around to the
// first shard after the last (forever). Each micro-step takes world_size * (local_tokens + 1)
// consecutive tokens off the stream; rank r keeps the r-th slice of local_tokens + 1 and uses
// slice[:-1] as inputs and slice[1:] as targets, so the one token of overlap gives the last
// input its target. All ranks walk the same cursor, so nothing needs to be communicated.
// Only one shard (20M tokens = 40 MB) is in memory at a time; it is re-read from disk when the
// cursor wraps, exactly like the reference, which gives the same token order as keeping it.
//
// The validation set is all val shards concatenated, cut to floor((N-1)/seq)*seq + 1 tokens:
// a whole number of seq-long input windows plus the one extra target token.
//
// Everything read from disk is validated (header, size, every token id < vocab) and every
// problem is a one-line fatal error naming the file.
//
// Plain C++17, CPU side only.
#pragma once

#include <algorithm>
#include <dirent.h>
#include <string>
#include <vector>

#include "utils.h"

// ----------------------------------------------------------------------------
// shard files

constexpr int SHARD_MAGIC = 20240520;
constexpr int SHARD_VERSION = 1;
constexpr int SHARD_HEADER_INTS = 256;
constexpr long SHARD_HEADER_BYTES = SHARD_HEADER_INTS * 4; // 1024

inline std::string path_join(const std::string &dir, const std::string &name) {
    if (dir.empty()) return name;
    if (dir.back() == '/') return dir + name;
    return dir + "/" + name;
}

// The files `dir`/`prefix`*.bin, sorted by name (like Python's sorted(glob(...))).
// Fatal if the directory is missing or nothing matches.
inline std::vector<std::string> list_shards(const std::string &dir, const char *prefix) {
    struct stat st;
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        fatal("%s: data directory not found (looking for %s*.bin) HINT: `make data` fetches the data; "
              "set DATA_PATH or --data-path if it lives elsewhere", dir.c_str(), prefix);
    DIR *d = opendir(dir.c_str());
    if (d == nullptr) fatal("%s: cannot open data directory (%s)", dir.c_str(), strerror(errno));
    std::vector<std::string> names;
    int compressed = 0; // prefix*.bin.xz files: a hint that the data was fetched but not unpacked
    const std::string pre(prefix), suffix(".bin"), xz_suffix(".bin.xz");
    auto ends_with = [](const std::string &s, const std::string &end) {
        return s.size() >= end.size() && s.compare(s.size() - end.size(), end.size(), end) == 0;
    };
    for (struct dirent *e = readdir(d); e != nullptr; e = readdir(d)) {
        std::string name = e->d_name;
        if (name.compare(0, pre.size(), pre) != 0) continue;
        if (ends_with(name, suffix) && name.size() >= pre.size() + suffix.size()) names.push_back(name);
        else if (ends_with(name, xz_suffix)) compressed++;
    }
    closedir(d);
    if (names.empty()) {
        if (compressed > 0)
            fatal("%s: no files matching %s*.bin (found %d %s*.bin.xz) HINT: decompress them with `xz -dk`",
                  dir.c_str(), prefix, compressed, prefix);
        fatal("%s: no files matching %s*.bin HINT: `make data` fetches the data; "
              "set DATA_PATH or --data-path if it lives elsewhere", dir.c_str(), prefix);
    }
    std::sort(names.begin(), names.end());
    std::vector<std::string> paths;
    for (const std::string &n : names) paths.push_back(path_join(dir, n));
    return paths;
}

// Check a shard header (the first SHARD_HEADER_BYTES bytes, n of them present) against the
// file's size in bytes: the magic, the version, a count >= 0 and size == header + 2 * count.
// Returns the token count, or -1 with a one-line reason in *err (no exit: the fuzz target
// test/fuzz/fuzz_shard_header.cpp drives this with arbitrary bytes).
inline long shard_header_parse(const uint8_t *hdr, size_t n, long long size, std::string *err) {
    char buf[256];
    auto fail = [&](const char *msg) { *err = msg; return -1L; };
    if (size < SHARD_HEADER_BYTES || n < SHARD_HEADER_BYTES) {
        snprintf(buf, sizeof buf, "file too short for the %ld-byte shard header (%lld bytes)", SHARD_HEADER_BYTES,
                 size < SHARD_HEADER_BYTES ? size : (long long)n);
        return fail(buf);
    }
    ByteReader r{hdr, (size_t)SHARD_HEADER_BYTES};
    uint32_t w[3];
    for (uint32_t &x : w) check_internal(r.u32(x));  // the header is all here (n checked above)
    int32_t magic = (int32_t)w[0], version = (int32_t)w[1], count = (int32_t)w[2];
    if (magic != SHARD_MAGIC) {
        snprintf(buf, sizeof buf, "bad shard magic %d (expected %d) HINT: not a FineWeb token shard", magic, SHARD_MAGIC);
        return fail(buf);
    }
    if (version != SHARD_VERSION) {
        snprintf(buf, sizeof buf, "unsupported shard version %d (expected %d)", version, SHARD_VERSION);
        return fail(buf);
    }
    if (count < 0) {  // an absurd count (>= 2^31 as unsigned) shows up here too
        snprintf(buf, sizeof buf, "bad token count %d in the shard header", count);
        return fail(buf);
    }
    long long expected = SHARD_HEADER_BYTES + 2LL * count;
    if (size != expected) {
        snprintf(buf, sizeof buf, "shard size mismatch: header says %d tokens = %lld bytes, file has %lld bytes%s", count,
                 expected, size, size < expected ? " (truncated)" : " (trailing bytes)");
        return fail(buf);
    }
    return count;
}

// Read and check a shard's header and the file size; returns the token count.
// This is cheap, so the train loader checks every shard this way up front.
inline long read_shard_header(const std::string &path) {
    const char *p = path.c_str();
    long long size = file_size(p);
    if (size < 0) fatal("%s: no such shard file", p);
    uint8_t hdr[SHARD_HEADER_BYTES];
    size_t got = 0;
    if (size >= SHARD_HEADER_BYTES) {
        FILE *fp = fopenCheck(p, "rb");
        got = fread(hdr, 1, sizeof(hdr), fp);
        fclose(fp);
        if (got != sizeof(hdr)) fatal("%s: short read of the shard header", p);
    }
    std::string err;
    long count = shard_header_parse(hdr, got, size, &err);
    if (count < 0) fatal("%s: %s", p, err.c_str());
    return count;
}

// Load a whole shard into `out`, validating the header, the size and every token id.
inline void load_shard(const std::string &path, std::vector<uint16_t> &out, int vocab_size) {
    check_internal(vocab_size > 0 && vocab_size <= 65536);
    const char *p = path.c_str();
    long count = read_shard_header(path);
    out.resize((size_t)count);
    FILE *fp = fopenCheck(p, "rb");
    if (fseek(fp, SHARD_HEADER_BYTES, SEEK_SET) != 0) fatal("%s: seek failed (%s)", p, strerror(errno));
    if (count > 0 && fread(out.data(), 2, (size_t)count, fp) != (size_t)count)
        fatal("%s: short read of %ld tokens (file changed while reading?)", p, count);
    fclose(fp);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (uint16_t &t : out) t = (uint16_t)((t >> 8) | (t << 8)); // the file is little-endian
#endif
    // one pass over the tokens; an id out of range would index past the embedding table
    for (long i = 0; i < count; i++) {
        if (out[i] >= vocab_size)
            fatal("%s: token id %d at token %ld (byte offset %ld) is out of range for vocab size %d", p,
                  (int)out[i], i, SHARD_HEADER_BYTES + 2 * i, vocab_size);
    }
}

// ----------------------------------------------------------------------------
// the training stream

// A cursor through the shards in order, wrapping around forever. The state is (file_idx, pos):
// the shard in memory and the next token to read from it. pos may equal the shard's length:
// like the reference, the stream moves on to the next shard only when it needs another token,
// so (file_idx, pos) after any take() is exactly the reference's state, and is what a
// checkpoint stores to resume.
struct TokenStream {
    std::vector<std::string> files;
    int vocab_size = 0;
    std::vector<uint16_t> tokens; // the current shard
    int file_idx = 0;
    long pos = 0;

    void init(const std::vector<std::string> &files_, int vocab_size_) {
        files = files_;
        vocab_size = vocab_size_;
        check_internal(!files.empty());
        // check every header now, so a bad shard fails at startup and not an hour into the run
        long total = 0;
        for (const std::string &f : files) total += read_shard_header(f);
        if (total == 0) fatal("%s: all %zu train shards are empty", files[0].c_str(), files.size());
        seek(0, 0);
    }

    // Jump to (file_idx, pos), e.g. from a checkpoint; seek(0, 0) restarts from the beginning.
    void seek(int file_idx_, long pos_) {
        if (file_idx_ < 0 || file_idx_ >= (int)files.size())
            fatal("data cursor: shard index %d out of range (%zu train shards) HINT: resuming with different data?",
                  file_idx_, files.size());
        file_idx = file_idx_;
        load_shard(files[file_idx], tokens, vocab_size);
        if (pos_ < 0 || pos_ > (long)tokens.size())
            fatal("%s: data cursor position %ld out of range (shard has %zu tokens) HINT: resuming with different data?",
                  files[file_idx].c_str(), pos_, tokens.size());
        pos = pos_;
    }

    // Copy the next n tokens to dst (or skip them when dst is null), crossing shard
    // boundaries and wrapping from the last shard to the first as needed.
    void take(long n, int32_t *dst) {
        while (n > 0) {
            long avail = (long)tokens.size() - pos;
            if (avail <= 0) { // this shard is used up (or empty): load the next one
                file_idx = (file_idx + 1) % (int)files.size();
                load_shard(files[file_idx], tokens, vocab_size);
                pos = 0;
                continue;
            }
            long k = std::min(n, avail);
            if (dst) {
                for (long i = 0; i < k; i++) dst[i] = tokens[pos + i];
                dst += k;
            }
            pos += k;
            n -= k;
        }
    }
};

// This rank's batches. Every call is one micro-step: with
//   local_tokens = global_tokens / (world_size * grad_accum)   (floor, as in the reference;
//                  the caller checks divisibility by world_size * grad_accum * seq_len)
// the stream advances by world_size * (local_tokens + 1) tokens, and x, y get this rank's
// local_tokens inputs and targets (x[i] = slice[i], y[i] = slice[i+1]); the caller views them
// as (local_tokens / seq_len, seq_len).
// The reference builds a fresh loader after its warmup steps: do that with seek(0, 0).
struct TrainLoader {
    TokenStream stream;
    int rank = 0, world_size = 1;
    std::vector<int32_t> slice; // (local_tokens + 1) tokens of this rank

    void init(const std::string &dir, int rank_, int world_size_, int vocab_size) {
        check_internal(world_size_ >= 1 && rank_ >= 0 && rank_ < world_size_);
        rank = rank_;
        world_size = world_size_;
        stream.init(list_shards(dir, "fineweb_train_"), vocab_size);
    }

    void next_batch(long global_tokens, int grad_accum, std::vector<int32_t> &x, std::vector<int32_t> &y) {
        check_internal(grad_accum >= 1);
        long local_tokens = global_tokens / ((long)world_size * grad_accum);
        if (local_tokens < 1)
            fatal_config("batch of %ld tokens is too small for world size %d x grad accumulation %d",
                         global_tokens, world_size, grad_accum);
        long span = local_tokens + 1;
        slice.resize((size_t)span);
        stream.take(rank * span, nullptr);                  // the ranks before us
        stream.take(span, slice.data());                    // ours
        stream.take((world_size - 1 - rank) * span, nullptr); // the ranks after us
        x.assign(slice.begin(), slice.end() - 1);
        y.assign(slice.begin() + 1, slice.end());
    }

    // cursor state for checkpoints
    int file_idx() const { return stream.file_idx; }
    long pos() const { return stream.pos; }
    void seek(int shard, long position) { stream.seek(shard, position); }
};

// ----------------------------------------------------------------------------
// the validation set

// All val shards concatenated, cut to floor((N-1)/seq_len)*seq_len + 1 tokens.
inline std::vector<uint16_t> load_val_tokens(const std::string &dir, int seq_len, int vocab_size) {
    check_internal(seq_len > 0);
    std::vector<std::string> files = list_shards(dir, "fineweb_val_");
    std::vector<uint16_t> all, shard;
    for (const std::string &f : files) {
        load_shard(f, shard, vocab_size);
        all.insert(all.end(), shard.begin(), shard.end());
    }
    long n = (long)all.size();
    long usable = n > 0 ? ((n - 1) / seq_len) * seq_len : 0;
    if (usable <= 0)
        fatal("%s: validation split too short for seq_len %d (%ld tokens in %zu fineweb_val_*.bin shards, need at least %d)",
              dir.c_str(), seq_len, n, files.size(), seq_len + 1);
    all.resize((size_t)usable + 1);
    return all;
}
