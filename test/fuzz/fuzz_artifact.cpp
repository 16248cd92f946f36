// fuzz_artifact: libFuzzer target for artifact_parse (common/quant.h): a whole .ptz file image,
// header and zstd frame included. Built and run by test/test_fuzz.sh.
//
// Anything that parses is also dequantized (every table entry's sizes are then trusted).
#include "../../common/quant.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Artifact art;
    std::string err;
    if (!artifact_parse(data, size, art, &err)) {
        if (err.empty()) __builtin_trap();  // a failure must say why
        return 0;
    }
    Checkpoint ck;
    artifact_dequantize(art, ck);
    return 0;
}
