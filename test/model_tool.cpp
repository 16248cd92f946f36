// model_tool: print what common/model_cpu.h computes for the pieces whose exact bits come from
// torch's integer and float32 arithmetic, so test/test_model.sh can compare them with torch
// itself (test/model_torch_ref.py):
//
//   model_tool hash BUCKETS B T ID...      the BigramHash bucket of each of the B*T positions
//                                          (B sequences of T ids), one line "hash h0 h1 ..."
//   model_tool rope T RD BASE              the RoPE tables for sequence length T:
//                                            inv_freq <float32 bits as 8 hex digits>...
//                                            cos <t> <rd/2 values>     (for a few positions t)
//                                            sin <t> <rd/2 values>
//                                          values printed with %.9g (round-trips a float)
#include "../common/model_cpu.h"

static long arg_long(const char *s, const char *what) { return parse_long_arg("model_tool", s, what); }

int main(int argc, char **argv) {
    if (argc >= 5 && !strcmp(argv[1], "hash")) {
        int buckets = (int)arg_long(argv[2], "BUCKETS"), B = (int)arg_long(argv[3], "B"), T = (int)arg_long(argv[4], "T");
        if (buckets < 2 || B < 1 || T < 1 || argc != 5 + B * T) fatal_config("model_tool hash: need BUCKETS >= 2, B, T and B*T ids");
        std::vector<int> ids(B * T), h(B * T);
        for (int i = 0; i < B * T; i++) {
            ids[i] = (int)arg_long(argv[5 + i], "ID");
            if (ids[i] < 0 || ids[i] > 65535) fatal_config("model_tool hash: id %d outside [0, 65535]", ids[i]);
        }
        bigram_hash_cpu(h.data(), ids.data(), B, T, buckets);
        printf("hash");
        for (int x : h) printf(" %d", x);
        printf("\n");
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "rope")) {
        int T = (int)arg_long(argv[2], "T"), rd = (int)arg_long(argv[3], "RD");
        double base = strtod(argv[4], nullptr);
        if (T < 1 || rd < 4 || rd % 2) fatal_config("model_tool rope: need T >= 1 and an even RD >= 4");
        const int half = rd / 2;
        std::vector<float> inv(half), cs((size_t)T * half), sn((size_t)T * half);
        rope_inv_freq_cpu(inv.data(), T, rd, base);
        rope_tables_cpu(cs.data(), sn.data(), T, rd, base);
        printf("inv_freq");
        for (float f : inv) { uint32_t u; memcpy(&u, &f, 4); printf(" %08x", u); }
        printf("\n");
        for (int t : {0, 1, 2, 3, 100, 1023, T - 1}) {
            if (t < 0 || t >= T) continue;
            printf("cos %d", t);
            for (int i = 0; i < half; i++) printf(" %.9g", cs[(size_t)t * half + i]);
            printf("\nsin %d", t);
            for (int i = 0; i < half; i++) printf(" %.9g", sn[(size_t)t * half + i]);
            printf("\n");
        }
        return 0;
    }
    fatal_config("usage: model_tool hash BUCKETS B T ID... | model_tool rope T RD BASE");
}
