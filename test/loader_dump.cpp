// loader_dump: print what common/data.h reads, so test/test_data.sh can compare it token for
// token with the independent Python re-implementation in test/loader_ref.py.
//
//   loader_dump train DIR VOCAB WORLD RANK GLOBAL_TOKENS GRAD_ACCUM MICRO_STEPS [SHARD POS]
//       for each micro-step, this rank's batch as three lines:
//         x <inputs...>
//         y <targets...>
//         cursor <file_idx> <pos>        (the stream state after the micro-step)
//       with SHARD POS, seek there first (what a resumed run does).
//   loader_dump val DIR VOCAB SEQ
//       "val <count>" then the validation tokens on one line
//   loader_dump shard FILE VOCAB
//       "shard <count>" then the shard's tokens on one line
#include "../common/data.h"

static long arg_long(const char *s, const char *what) { return parse_long_arg("loader_dump", s, what); }

static void print_line(const char *tag, const int32_t *t, size_t n) {
    fputs(tag, stdout);
    for (size_t i = 0; i < n; i++) printf(" %d", (int)t[i]);
    fputc('\n', stdout);
}

static void print_tokens(const std::vector<uint16_t> &t) {
    for (size_t i = 0; i < t.size(); i++) printf(i ? " %d" : "%d", (int)t[i]);
    fputc('\n', stdout);
}

static void usage() {
    fatal_config("usage: loader_dump train DIR VOCAB WORLD RANK GLOBAL_TOKENS GRAD_ACCUM MICRO_STEPS [SHARD POS]"
                 " | val DIR VOCAB SEQ | shard FILE VOCAB");
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    std::string mode = argv[1];
    if (mode == "train" && (argc == 9 || argc == 11)) {
        std::string dir = argv[2];
        int vocab = (int)arg_long(argv[3], "VOCAB");
        int world = (int)arg_long(argv[4], "WORLD");
        int rank = (int)arg_long(argv[5], "RANK");
        long global_tokens = arg_long(argv[6], "GLOBAL_TOKENS");
        int grad_accum = (int)arg_long(argv[7], "GRAD_ACCUM");
        long micro_steps = arg_long(argv[8], "MICRO_STEPS");
        if (vocab < 1 || vocab > 65536 || world < 1 || rank < 0 || rank >= world || grad_accum < 1)
            fatal_config("loader_dump: bad VOCAB/WORLD/RANK/GRAD_ACCUM");
        TrainLoader loader;
        loader.init(dir, rank, world, vocab);
        if (argc == 11) loader.seek((int)arg_long(argv[9], "SHARD"), arg_long(argv[10], "POS"));
        std::vector<int32_t> x, y;
        for (long s = 0; s < micro_steps; s++) {
            loader.next_batch(global_tokens, grad_accum, x, y);
            print_line("x", x.data(), x.size());
            print_line("y", y.data(), y.size());
            printf("cursor %d %ld\n", loader.file_idx(), loader.pos());
        }
    } else if (mode == "val" && argc == 5) {
        int vocab = (int)arg_long(argv[3], "VOCAB");
        int seq = (int)arg_long(argv[4], "SEQ");
        if (vocab < 1 || vocab > 65536 || seq < 1) fatal_config("loader_dump: bad VOCAB/SEQ");
        std::vector<uint16_t> val = load_val_tokens(argv[2], seq, vocab);
        printf("val %zu\n", val.size());
        print_tokens(val);
    } else if (mode == "shard" && argc == 4) {
        int vocab = (int)arg_long(argv[3], "VOCAB");
        if (vocab < 1 || vocab > 65536) fatal_config("loader_dump: bad VOCAB");
        std::vector<uint16_t> t;
        load_shard(argv[2], t, vocab);
        printf("shard %zu\n", t.size());
        print_tokens(t);
    } else {
        usage();
    }
    return 0;
}
