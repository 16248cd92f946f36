// fuzz_shard_header: libFuzzer target for shard_header_parse (common/data.h), the check every
// token shard's first 1024 bytes go through before anything is read.
// Built and run by test/test_fuzz.sh with clang's -fsanitize=fuzzer,address,undefined.
//
// The input's first 8 bytes give the file size the header is checked against (so sizes near
// 1024 + 2 * count get tried, not only the input's own length), the rest is the header. Half the
// inputs get the right magic and version written in (otherwise nearly every mutation stops at
// the magic). Properties: a failure says why; a success returns a count >= 0 with
// size == 1024 + 2 * count, the magic and version right; and the verdict is the spec's.
#include "../../common/data.h"

static void parse_one(const uint8_t *p, size_t n, long long size) {
    std::string err;
    const long count = shard_header_parse(p, n, size, &err);
    bool spec_ok = false;
    long long spec_count = -1;
    if (n >= (size_t)SHARD_HEADER_BYTES && size >= SHARD_HEADER_BYTES) {
        int32_t w[3];
        memcpy(w, p, sizeof w);  // little-endian hosts only (the fuzz targets run on x86/arm64)
        spec_count = w[2];
        spec_ok = w[0] == SHARD_MAGIC && w[1] == SHARD_VERSION && w[2] >= 0 && size == SHARD_HEADER_BYTES + 2LL * w[2];
    }
    if (count < 0) {
        if (err.empty() || spec_ok) __builtin_trap();  // a failure must say why, and be a real one
        return;
    }
    if (!spec_ok || count != spec_count) __builtin_trap();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    long long file_size;
    memcpy(&file_size, data, 8);
    file_size %= 1LL << 40;  // any size a disk holds, negative ones included (file_size() errors)
    const uint8_t *hdr = data + 8;
    const size_t n = size - 8;
    parse_one(hdr, n, file_size);
    if (n >= 12) {
        std::vector<uint8_t> fixed(hdr, hdr + n);
        const int32_t mv[2] = {SHARD_MAGIC, SHARD_VERSION};
        memcpy(fixed.data(), mv, sizeof mv);
        parse_one(fixed.data(), n, file_size);
        // and the size that matches the count, if the count is sane
        int32_t count;
        memcpy(&count, fixed.data() + 8, 4);
        parse_one(fixed.data(), n, SHARD_HEADER_BYTES + 2LL * count);
    }
    return 0;
}
