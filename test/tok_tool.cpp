// tok_tool: a thin command line over common/tokenizer.h, for the tests.
//
//   build/tok_tool dump MODEL [VOCAB_SIZE]   one line per id (see tokenizer_dump), with the
//                                            tables padded to VOCAB_SIZE ids when it is larger
//   build/tok_tool decode MODEL              whitespace-separated ids on stdin -> the decoded
//                                            text on stdout, exactly (no newline added)
//   build/tok_tool encode MODEL              the text on stdin (all of it) -> its ids, one line
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../common/tokenizer.h" // defines: Tokenizer, tokenizer_load, tokenizer_dump, tokenizer_decode

static void usage() {
    fatal_config("usage: tok_tool dump MODEL [VOCAB_SIZE] | tok_tool decode MODEL < ids.txt | tok_tool encode MODEL < text");
}

int main(int argc, char **argv) {
    if (argc < 3) usage();
    std::string cmd = argv[1];
    if (cmd == "dump") {
        if (argc > 4) usage();
        int vocab_size = 0;
        if (argc == 4) {
            char *end;
            long v = strtol(argv[3], &end, 10);
            if (*end || v < 0 || v > (1 << 24)) fatal_config("VOCAB_SIZE: expected a count, got '%s'", argv[3]);
            vocab_size = (int)v;
        }
        Tokenizer tok;
        tokenizer_load(tok, argv[2]);
        tokenizer_dump(tok, stdout, vocab_size);
    } else if (cmd == "decode") {
        if (argc != 3) usage();
        Tokenizer tok;
        tokenizer_load(tok, argv[2]);
        std::vector<int> ids;
        long long v;
        int r;
        while ((r = scanf("%lld", &v)) == 1) {
            if (v < 0 || v >= tok.size())
                fatal("<stdin>: id %lld out of range for %s (%d pieces)", v, argv[2], tok.size());
            ids.push_back((int)v);
        }
        if (r != EOF) fatal("<stdin>: expected whitespace-separated token ids");
        std::string text = tokenizer_decode(tok, ids.data(), ids.size());
        fwriteCheck(text.data(), 1, text.size(), stdout, "<stdout>");
    } else if (cmd == "encode") {
        if (argc != 3) usage();
        Tokenizer tok;
        tokenizer_load(tok, argv[2]);
        std::string text;
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) text.append(buf, n);
        std::vector<int> ids = tokenizer_encode(tok, text);
        for (size_t i = 0; i < ids.size(); i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    } else {
        usage();
    }
    return 0;
}
