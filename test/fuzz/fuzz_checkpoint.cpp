// fuzz_checkpoint: libFuzzer target for checkpoint_parse (common/checkpoint.h).
// Built and run by test/test_fuzz.sh with clang's -fsanitize=fuzzer,address,undefined.
//
// Each input is parsed twice: as it is, and with its last 4 bytes replaced by the right CRC-32
// (otherwise nearly every mutation stops at the checksum and the parser behind it goes untested).
// Whatever parses must serialize back to exactly the same bytes: the format has no slack.
#include "../../common/checkpoint.h"

static void parse_one(const uint8_t *p, size_t n) {
    Checkpoint ck;
    std::string err;
    if (!checkpoint_parse(p, n, ck, &err)) {
        if (err.empty()) __builtin_trap();  // a failure must say why
        return;
    }
    std::vector<uint8_t> again = checkpoint_serialize(ck);
    if (again.size() != n || memcmp(again.data(), p, n) != 0) __builtin_trap();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    parse_one(data, size);
    if (size >= 16) parse_one(with_crc_trailer(data, size).data(), size);
    return 0;
}
