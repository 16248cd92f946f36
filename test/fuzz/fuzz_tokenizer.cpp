// fuzz_tokenizer: libFuzzer target for tokenizer_parse (common/tokenizer.h).
// Built and run by test/test_fuzz.sh with clang's -fsanitize=fuzzer,address,undefined.
//
// A model that parses also goes through what the programs do with it next: the byte-count
// tables (padded past the tokenizer, as for a larger vocab) and decoding every id, in order and
// in a scrambled order (byte pieces mixed with text), plus ids outside the tokenizer.
#include "../../common/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Tokenizer tok;
    std::string err;
    if (!tokenizer_parse(tok, data, size, &err)) {
        if (err.empty()) __builtin_trap();  // a failure must say why
        return 0;
    }
    ByteLuts l = tokenizer_byte_luts(tok, tok.size() + 3);
    if ((int)l.base_bytes.size() != tok.size() + 3) __builtin_trap();
    int n = tok.size() < 4096 ? tok.size() : 4096;
    std::vector<int> ids;
    for (int i = 0; i < n; i++) ids.push_back(i);
    for (int i = 0; i < n; i++) ids.push_back((int)((i * 2654435761u) % (unsigned)(n + 2)) - 1);
    std::string text = tokenizer_decode(tok, ids.data(), ids.size());
    // decoding promises valid UTF-8 (pieces are checked at parse time; the unknown piece's
    // surface comes from the file unchecked, as SentencePiece takes it)
    if (utf8_valid(tok.unk_surface) && !utf8_valid(text)) __builtin_trap();
    return 0;
}
