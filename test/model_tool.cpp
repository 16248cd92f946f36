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
//   model_tool sliding SEQ STRIDE NTOK BATCH REF_ROUNDING
//                                          the sliding-window eval (eval.h) of a tiny random
//                                          model (XSA and VE in its last block) over NTOK random
//                                          tokens, with the scored rows only (NllFn's score_from,
//                                          as eval.h asks) and with every row computed: every
//                                          call's scored losses and the final sums must agree bit
//                                          for bit; prints both results, exit 1 if they differ
#include "../common/model_cpu.h"
#include "../common/eval.h"

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
    if (argc == 7 && !strcmp(argv[1], "sliding")) {
        const int seq = (int)arg_long(argv[2], "SEQ"), stride = (int)arg_long(argv[3], "STRIDE");
        const long ntok = arg_long(argv[4], "NTOK");
        const int batch = (int)arg_long(argv[5], "BATCH"), ref = (int)arg_long(argv[6], "REF_ROUNDING");
        if (seq < 2 || stride < 1 || stride >= seq || ntok <= seq || batch < 1)
            fatal_config("model_tool sliding: need SEQ >= 2, 1 <= STRIDE < SEQ, NTOK > SEQ, BATCH >= 1");
        Config c;
        config_defaults(c);
        c.vocab_size = 64, c.num_layers = 5, c.model_dim = 16, c.num_heads = 2, c.num_kv_heads = 1, c.mlp_mult = 2;
        c.bigram_vocab_size = 32, c.bigram_dim = 8, c.xsa_last_n = 2, c.rope_dims = 4;
        c.ve_enabled = 1, c.ve_dim = 4, c.ve_layers = "1,4", c.logit_softcap = 5, c.eval_ref_rounding = ref != 0;
        config_derive(c);
        ModelCPU<float> m;
        model_build(m, c);
        model_init(m.params, c, 7);
        Rng rng(8);
        for (float &w : m.params_mem) w += (float)(0.1 * rng.normal());  // the init's zero matrices too
        std::vector<uint16_t> val(ntok + 1);
        for (size_t i = 0; i < val.size(); i++) val[i] = (uint16_t)(rng.uniform() < 0.3 && i ? val[i - 1] : (int)(rng.uniform() * 64) % 64);
        ByteLuts luts;
        for (int v = 0; v < 64; v++) {
            luts.base_bytes.push_back(v % 4);
            luts.leading_space.push_back(v % 3 == 0);
            luts.boundary.push_back(v == 0);
        }
        // `scored`: what eval.h calls; `checked`: the same, and the full forward of the same batch,
        // compared at the scored positions; `full`: every row computed
        const NllFn scored = nll_fn_cpu(m);
        long calls = 0, scored_calls = 0, compared = 0, differ = 0;
        std::vector<float> all;
        const NllFn full = [&](const int32_t *x, const int32_t *y, int B, int T, bool sl, int sf, float *out) {
            scored(x, y, B, T, sl, 0, out);
        };
        const NllFn checked = [&](const int32_t *x, const int32_t *y, int B, int T, bool sl, int sf, float *out) {
            calls++;
            scored_calls += sf > 0;
            all.resize((size_t)B * T);
            scored(x, y, B, T, sl, 0, all.data());
            scored(x, y, B, T, sl, sf, out);
            for (int b = 0; b < B; b++)
                for (int t = sf; t < T; t++) {
                    const size_t k = (size_t)b * T + t;
                    compared++;
                    differ += !std::isfinite(out[k]) || memcmp(&out[k], &all[k], sizeof(float)) != 0;
                }
        };
        const EvalResult a = eval_sliding(val, seq, stride, batch, luts, checked), b = eval_sliding(val, seq, stride, batch, luts, full);
        printf("sliding scored-only  val_loss:%.17g val_bpb:%.17g tokens:%.0f bytes:%.0f\n", a.val_loss(), a.val_bpb(), a.tokens, a.bytes);
        printf("sliding full-forward val_loss:%.17g val_bpb:%.17g tokens:%.0f bytes:%.0f\n", b.val_loss(), b.val_bpb(), b.tokens, b.bytes);
        printf("calls:%ld with_score_from:%ld scored_losses_compared:%ld differing:%ld\n", calls, scored_calls, compared, differ);
        const bool same = memcmp(&a.loss_sum, &b.loss_sum, sizeof(double)) == 0 && a.tokens == b.tokens && a.bytes == b.bytes;
        return same && differ == 0 && scored_calls > 0 && std::isfinite(a.val_bpb()) ? 0 : 1;
    }
    fatal_config("usage: model_tool hash BUCKETS B T ID... | model_tool rope T RD BASE | model_tool sliding SEQ STRIDE NTOK BATCH REF_ROUNDING");
}
