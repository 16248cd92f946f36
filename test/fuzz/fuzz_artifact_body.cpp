// fuzz_artifact_body: libFuzzer target for artifact_parse_body (common/quant.h), the part of
// artifact_parse behind zstd (mutated zstd frames almost never decompress, so the body parser
// gets its own target). Built and run by test/test_fuzz.sh.
//
// Each input is parsed as it is and with its last 4 bytes set to the right CRC-32. Whatever
// parses must serialize back to the same bytes and dequantize without trouble.
#include "../../common/quant.h"

static void parse_one(const uint8_t *p, size_t n) {
    Artifact art;
    std::string err;
    if (!artifact_parse_body(p, n, art, &err)) {
        if (err.empty()) __builtin_trap();
        return;
    }
    std::vector<uint8_t> again = artifact_body_serialize(art);
    if (again.size() != n || memcmp(again.data(), p, n) != 0) __builtin_trap();
    Checkpoint ck;
    artifact_dequantize(art, ck);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    parse_one(data, size);
    if (size >= 12) parse_one(with_crc_trailer(data, size).data(), size);
    return 0;
}
