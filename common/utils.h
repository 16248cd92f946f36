// utils.h: the small things every program here needs.
//
//   - fatal errors: one clear line, naming the file and the problem, then a non-zero exit
//     (exit status 1 for bad input files, 2 for bad configuration / usage);
//   - checked file I/O (fopenCheck, freadCheck, ...) that reports file:line of the caller;
//   - little-endian readers for the binary formats (shards, checkpoints, artifacts);
//   - CRC-32 for checksums in our own file formats;
//   - wall-clock timers;
//   - the Logger: everything printed goes to stdout and to logs/<RUN_ID>.txt.
//
// Plain C++17, no CUDA: the CPU build and the tests use it too.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <sys/stat.h>
#include <vector>

// ----------------------------------------------------------------------------
// fatal errors

// Exit codes: 1 = bad input (a file, data), 2 = bad configuration or usage.
enum { EXIT_BAD_INPUT = 1, EXIT_BAD_CONFIG = 2 };

// In a multi-process run dist.h sets this to "[rank R] ", so every error line names its rank.
inline char g_error_prefix[32] = "";

// Print "error: <message>" on stderr (one line) and exit with `code`.
[[noreturn]] inline void fatal_code(int code, const char *fmt, ...) {
    fflush(stdout);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: %s", g_error_prefix);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(code);
}
#define fatal(...) fatal_code(EXIT_BAD_INPUT, __VA_ARGS__)
#define fatal_config(...) fatal_code(EXIT_BAD_CONFIG, __VA_ARGS__)

// Developer knobs (environment variables read once, for A/B runs with one binary):
// env_choice: the index of the value among `choices` (`def` when unset); env_int: an integer in
// lo..hi (`def` when unset), `what` saying what it picks. Anything else exits 2 naming the knob,
// what it accepts and the default.
inline int env_choice(const char *name, std::initializer_list<const char *> choices, int def) {
    const char *s = getenv(name);
    if (!s) return def;
    int i = 0;
    for (const char *c : choices) {
        if (!strcmp(s, c)) return i;
        i++;
    }
    std::string list;
    for (const char *c : choices) list += std::string(list.empty() ? "" : ", ") + c;
    fatal_config("%s='%s': need one of %s (the default: %s)", name, s, list.c_str(), choices.begin()[def]);
}
inline int env_int(const char *name, int lo, int hi, int def, const char *what) {
    const char *s = getenv(name);
    if (!s) return def;
    char *end = nullptr;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi)
        fatal_config("%s='%s': need an integer %d..%d, %s (the default: %d)", name, s, lo, hi, what, def);
    return (int)v;
}

// A command-line argument s as a whole base-10 long, or exit 2 with "<prog>: <what> must be an
// integer" (the tools' positional arguments).
inline long parse_long_arg(const char *prog, const char *s, const char *what) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') fatal_config("%s: %s must be an integer, got '%s'", prog, what, s);
    return v;
}

// Internal invariants (bugs, not bad input): report file:line.
#define check_internal(cond)                                                              \
    do {                                                                                  \
        if (!(cond)) fatal_code(3, "internal check failed at %s:%d: %s", __FILE__, __LINE__, #cond); \
    } while (0)

// ----------------------------------------------------------------------------
// checked file I/O, llm.c style: the macro passes the caller's file:line along

inline FILE *fopen_check(const char *path, const char *mode, const char *file, int line) {
    FILE *fp = fopen(path, mode);
    if (fp == nullptr)
        fatal("%s: cannot open (%s) [at %s:%d] HINT: check the path and permissions", path,
              strerror(errno), file, line);
    return fp;
}
#define fopenCheck(path, mode) fopen_check(path, mode, __FILE__, __LINE__)

inline void fwrite_check(const void *ptr, size_t size, size_t n, FILE *fp, const char *what,
                         const char *file, int line) {
    if (n > 0 && fwrite(ptr, size, n, fp) != n)
        fatal("%s: write failed (%s) [at %s:%d] HINT: is the disk full?", what, strerror(errno),
              file, line);
}
#define fwriteCheck(ptr, size, n, fp, what) fwrite_check(ptr, size, n, fp, what, __FILE__, __LINE__)

inline void fclose_check(FILE *fp, const char *what, const char *file, int line) {
    if (fclose(fp) != 0)
        fatal("%s: close failed (%s) [at %s:%d]", what, strerror(errno), file, line);
}
#define fcloseCheck(fp, what) fclose_check(fp, what, __FILE__, __LINE__)

inline void *malloc_check(size_t size, const char *file, int line) {
    void *p = malloc(size ? size : 1);
    if (p == nullptr) fatal("out of host memory allocating %zu bytes [at %s:%d]", size, file, line);
    return p;
}
#define mallocCheck(size) malloc_check(size, __FILE__, __LINE__)

// Size of a file in bytes, or -1 if it does not exist / is not a regular file.
inline long long file_size(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return -1;
    return (long long)st.st_size;
}

inline bool file_exists(const char *path) { return file_size(path) >= 0; }
inline bool dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// Read a whole file into memory; fatal (naming the file) if it cannot.
inline std::vector<uint8_t> read_file_bytes(const char *path) {
    long long n = file_size(path);
    if (n < 0) fatal("%s: no such file", path);
    FILE *fp = fopenCheck(path, "rb");
    std::vector<uint8_t> buf((size_t)n);
    if (n > 0 && fread(buf.data(), 1, (size_t)n, fp) != (size_t)n)
        fatal("%s: short read (file changed while reading?)", path);
    fclose(fp);
    return buf;
}

// Write a whole buffer to a file atomically enough for our purposes: to path.tmp, then rename,
// so a crash never leaves a half-written checkpoint under the final name.
inline void write_file_bytes(const char *path, const void *data, size_t n) {
    std::string tmp = std::string(path) + ".tmp";
    FILE *fp = fopenCheck(tmp.c_str(), "wb");
    fwriteCheck(data, 1, n, fp, tmp.c_str());
    fcloseCheck(fp, tmp.c_str());
    if (rename(tmp.c_str(), path) != 0) fatal("%s: rename from %s failed (%s)", path, tmp.c_str(), strerror(errno));
}

// ----------------------------------------------------------------------------
// little-endian byte buffers: a writer that appends and a reader that never reads past the end.
// All our formats are little-endian; so are x86-64 and every GPU host we target, but we
// assemble bytes explicitly anyway so the formats do not depend on the host.

inline uint16_t get_u16le(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
inline uint32_t get_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
inline uint64_t get_u64le(const uint8_t *p) { return (uint64_t)get_u32le(p) | ((uint64_t)get_u32le(p + 4) << 32); }
inline float get_f32le(const uint8_t *p) { uint32_t u = get_u32le(p); float f; memcpy(&f, &u, 4); return f; }
inline void put_u16le(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
inline void put_f32le(uint8_t *p, float f) { uint32_t u; memcpy(&u, &f, 4); for (int i = 0; i < 4; i++) p[i] = (uint8_t)(u >> (8 * i)); }

struct ByteWriter {
    std::vector<uint8_t> buf;
    void bytes(const void *p, size_t n) {
        const uint8_t *b = (const uint8_t *)p;
        buf.insert(buf.end(), b, b + n);
    }
    void u8(uint8_t v) { buf.push_back(v); }
    void u16(uint16_t v) { for (int i = 0; i < 2; i++) buf.push_back((uint8_t)(v >> (8 * i))); }
    void u32(uint32_t v) { for (int i = 0; i < 4; i++) buf.push_back((uint8_t)(v >> (8 * i))); }
    void u64(uint64_t v) { for (int i = 0; i < 8; i++) buf.push_back((uint8_t)(v >> (8 * i))); }
    void str16(const std::string &s) { u16((uint16_t)s.size()); bytes(s.data(), s.size()); }
};

// A parser's error sink: fail(msg) stores msg in *err (when err is given) and returns false, so
// a parser can `return fail("truncated (header)");`.
struct ParseFail {
    std::string *err;
    bool operator()(const std::string &m) const {
        if (err) *err = m;
        return false;
    }
};

// A bounds-checked little-endian reader over a byte range for the parsers of files we do not
// trust (checkpoints, artifacts, shard headers). Every read returns false instead of running past
// the end, and the caller turns that into its own one-line error; nothing here exits, so the
// fuzzers can drive the parsers directly.
struct ByteReader {
    const uint8_t *p;
    size_t n, pos = 0;
    bool need(size_t k) const { return k <= n - pos; }
    bool u8(uint8_t &v) { if (!need(1)) return false; v = p[pos++]; return true; }
    bool u16(uint16_t &v) { if (!need(2)) return false; v = get_u16le(p + pos); pos += 2; return true; }
    bool u32(uint32_t &v) { if (!need(4)) return false; v = get_u32le(p + pos); pos += 4; return true; }
    bool u64(uint64_t &v) { uint32_t lo, hi; if (!u32(lo) || !u32(hi)) return false; v = (uint64_t)lo | ((uint64_t)hi << 32); return true; }
    bool str16(std::string &s) {
        uint16_t k;
        if (!u16(k) || !need(k)) return false;
        s.assign((const char *)p + pos, k);
        pos += k;
        return true;
    }
};

// CRC-32 (IEEE 802.3, the zlib/PNG polynomial), bytewise with a table built on first use.
inline uint32_t crc32_update(uint32_t crc, const void *data, size_t n) {
    static uint32_t table[256];
    static bool ready = false;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = true;
    }
    const uint8_t *b = (const uint8_t *)data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ b[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}
inline uint32_t crc32(const void *data, size_t n) { return crc32_update(0, data, n); }
// A copy of p[0, n) (n >= 4) with its last 4 bytes replaced by the CRC-32 of the rest,
// little-endian: the trailer of the .ckpt and .ptz formats (the fuzzers use it to get past it).
inline std::vector<uint8_t> with_crc_trailer(const uint8_t *p, size_t n) {
    std::vector<uint8_t> v(p, p + n);
    const uint32_t c = crc32(v.data(), n - 4);
    for (int i = 0; i < 4; i++) v[n - 4 + i] = (uint8_t)(c >> (8 * i));
    return v;
}

// ----------------------------------------------------------------------------
// bf16 / fp16 <-> fp32 on the host (round to nearest even, as torch does)

inline float bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
inline uint16_t f32_to_bf16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40); // NaN stays NaN
    u += 0x7FFFu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, u;
    if (exp == 0) {
        if (man == 0) u = sign;
        else { // subnormal: normalize
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3FF) << 13);
        }
    } else if (exp == 31) u = sign | 0x7F800000u | (man << 13);
    else u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float f; memcpy(&f, &u, 4); return f;
}
inline uint16_t f32_to_f16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00);            // NaN
    if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00);           // overflow -> inf (>= 65520)
    if (a < 0x38800000u) {                                            // subnormal or zero in fp16
        if (a < 0x33000000u) return (uint16_t)sign;                   // < 2^-25 rounds to 0
        uint32_t man = (a & 0x7FFFFF) | 0x800000;
        int shift = 126 - (int)(a >> 23);                            // 14..24
        uint32_t r = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((a >> 13) - ((127 - 15) << 10));
    uint32_t rem = a & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

// ----------------------------------------------------------------------------
// timers

inline double now_seconds() {
    using namespace std::chrono;
    return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// The memory a new allocation can get without swapping (/proc/meminfo's MemAvailable), in
// bytes; -1 where there is no /proc (then nothing is checked).
inline double mem_available_bytes() {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %ld kB", &kb) == 1) break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024.0;
}

// ----------------------------------------------------------------------------
// Logger: printf to stdout and, once opened, to logs/<run_id>.txt as well.

struct Logger {
    FILE *fp = nullptr;
    std::string path;
    void open(const std::string &run_id, const std::string &dir = "logs") {
        mkdir(dir.c_str(), 0755); // fine if it exists
        path = dir + "/" + run_id + ".txt";
        fp = fopen(path.c_str(), "a");
        if (fp == nullptr) fatal("%s: cannot open log file (%s)", path.c_str(), strerror(errno));
    }
    void close() { if (fp) { fclose(fp); fp = nullptr; } }
    // log to stdout and the file
    void printf(const char *fmt, ...) __attribute__((format(printf, 2, 3))) {
        va_list ap;
        va_start(ap, fmt); vfprintf(stdout, fmt, ap); va_end(ap);
        fflush(stdout);
        if (fp) { va_start(ap, fmt); vfprintf(fp, fmt, ap); va_end(ap); fflush(fp); }
    }
    // log to the file only (e.g. the source code, environment)
    void file_only(const char *fmt, ...) __attribute__((format(printf, 2, 3))) {
        if (!fp) return;
        va_list ap;
        va_start(ap, fmt); vfprintf(fp, fmt, ap); va_end(ap); fflush(fp);
    }
};
