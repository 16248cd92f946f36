// eval.h: validation scoring in bits per byte, the reference's two ways, over any forward pass.
//
//   standard:        the val tokens cut into non-overlapping windows of seq_len, every position
//                    scored once (eval_val in the reference);
//   sliding window:  windows of seq_len starting every `stride` tokens; the first window scores
//                    all its positions, every later one only its last min(stride, length)
//                    positions, so each token is scored with up to seq_len - stride of context
//                    (eval_val_sliding). Near the end the windows get shorter but still score
//                    their last `stride` positions, so the reference scores a few tail tokens
//                    more than once. We match it (that is the number people compare against).
//
// bits per byte = (mean loss in nats / ln 2) * (scored tokens / scored bytes), where a target's
// bytes are base_bytes[tgt] + (leading_space[tgt] and not boundary[prev]).
//
// The forward pass is a callback, model.h's NllFn (nll_fn_cpu in model_cpu.h, nll_fn_gpu in
// model_gpu.cuh): nll(x, y, B, T, sliding, score_from, out) fills out[B*T] with the per-position
// cross-entropy of targets y given inputs x (both (B, T) int32), at the positions t >= score_from
// of each row. It always gets T = seq_len: short windows are zero-padded like the reference
// does, which matters because the RoPE base depends on the sequence length of the call. The
// sliding eval asks only for the suffix its windows score (score_from = the smallest first scored
// position in the batch, seq_len - stride for all but the first and the last batches), so the
// model skips the head and most of its last block for the rest: the same numbers, fewer FLOPs.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "model.h"      // NllFn
#include "tokenizer.h"  // ByteLuts
#include "utils.h"

struct EvalResult {
    double loss_sum = 0, tokens = 0, bytes = 0;  // sums over scored positions (float64, as the reference)
    double val_loss() const { return loss_sum / tokens; }
    double val_bpb() const { return (val_loss() / std::log(2.0)) * (tokens / bytes); }
};

inline double target_bytes(const ByteLuts &luts, int prev, int tgt) {
    return luts.base_bytes[tgt] + ((luts.leading_space[tgt] && !luts.boundary[prev]) ? 1 : 0);
}

// Progress line every few seconds on long evals, with the rate of scored tokens.
struct EvalProgress {
    const char *name;
    bool show = true;  // only rank 0 reports (its share), when the eval is split across ranks
    double t0 = now_seconds(), last = now_seconds();
    void tick(size_t done, size_t total, double scored_tokens) {
        double t = now_seconds();
        if (!show || t - last < 5.0) return;
        last = t;
        fprintf(stderr, "%s: %zu/%zu windows (%.0f%%) %.0fs scored_tok/s:%.0f\n", name, done, total, 100.0 * done / total,
                t - t0, scored_tokens / std::max(t - t0, 1e-9));
    }
};

// Rank `rank` of `world` scores the items [begin, end) of n, contiguous and in order, as the
// reference splits its evals; the caller adds the ranks' sums (in fp64).
struct EvalShard {
    size_t begin, end;
};
inline EvalShard eval_shard(size_t n, int rank, int world) {
    return EvalShard{n * (size_t)rank / (size_t)world, n * (size_t)(rank + 1) / (size_t)world};
}

// Standard eval over val (N tokens, N - 1 a multiple of seq_len as load_val_tokens cuts it), in
// batches of `batch_seqs` sequences; with world > 1, this rank's share of the sequences only.
inline EvalResult eval_standard(const std::vector<uint16_t> &val, int seq_len, int batch_seqs, const ByteLuts &luts,
                                const NllFn &nll, int rank = 0, int world = 1) {
    EvalResult r;
    const EvalShard sh = eval_shard((val.size() - 1) / seq_len, rank, world);
    const size_t total_seqs = sh.end;
    std::vector<int32_t> x, y;
    std::vector<float> out;
    EvalProgress prog{"eval", rank == 0};
    for (size_t s0 = sh.begin; s0 < total_seqs; s0 += batch_seqs) {
        int B = (int)std::min((size_t)batch_seqs, total_seqs - s0);
        x.resize((size_t)B * seq_len); y.resize(x.size()); out.resize(x.size());
        for (size_t i = 0; i < x.size(); i++) { x[i] = val[s0 * seq_len + i]; y[i] = val[s0 * seq_len + i + 1]; }
        nll(x.data(), y.data(), B, seq_len, false, 0, out.data());
        for (size_t i = 0; i < x.size(); i++) {
            r.loss_sum += out[i];
            r.bytes += target_bytes(luts, x[i], y[i]);
        }
        r.tokens += (double)x.size();
        prog.tick(s0 + B - sh.begin, total_seqs - sh.begin, r.tokens);
    }
    return r;
}

// Sliding-window eval with the reference's window and scoring rules (see the top of the file);
// with world > 1, this rank's share of the windows only.
inline EvalResult eval_sliding(const std::vector<uint16_t> &val, int seq_len, int stride, int batch_seqs,
                               const ByteLuts &luts, const NllFn &nll, int rank = 0, int world = 1) {
    EvalResult r;
    const long total = (long)val.size() - 1;  // number of (input, target) pairs
    std::vector<long> all_starts, starts;
    for (long ws = 0; ws < total; ws += stride) all_starts.push_back(ws);
    const EvalShard sh = eval_shard(all_starts.size(), rank, world);
    starts.assign(all_starts.begin() + sh.begin, all_starts.begin() + sh.end);
    std::vector<int32_t> x, y;
    std::vector<float> out;
    EvalProgress prog{"sliding_window", rank == 0};
    // window ws scores its positions [first_scored, wlen)
    auto window_len = [&](long ws) { return std::min(ws + seq_len, total) - ws; };
    auto first_scored = [&](long ws) { return ws == 0 ? 0 : std::max(window_len(ws) - stride, 0L); };
    for (size_t b0 = 0; b0 < starts.size(); b0 += batch_seqs) {
        int B = (int)std::min((size_t)batch_seqs, starts.size() - b0);
        x.assign((size_t)B * seq_len, 0); y.assign(x.size(), 0); out.resize(x.size());
        long score_from = seq_len - 1;
        for (int i = 0; i < B; i++) {
            long ws = starts[b0 + i], wlen = window_len(ws);
            for (long t = 0; t < wlen; t++) { x[(size_t)i * seq_len + t] = val[ws + t]; y[(size_t)i * seq_len + t] = val[ws + t + 1]; }
            score_from = std::min(score_from, first_scored(ws));
        }
        nll(x.data(), y.data(), B, seq_len, true, (int)score_from, out.data());
        for (int i = 0; i < B; i++) {
            long ws = starts[b0 + i], wlen = window_len(ws), s = first_scored(ws);
            for (long t = s; t < wlen; t++) {
                size_t k = (size_t)i * seq_len + t;
                r.loss_sum += out[k];
                r.bytes += target_bytes(luts, x[k], y[k]);
            }
            r.tokens += (double)(wlen - s);
        }
        prog.tick(b0 + B, starts.size(), r.tokens);
    }
    return r;
}

// Log "<tag> val_loss:X val_bpb:Y<extra> eval_time:Tms" and its 8-decimal "_exact" twin.
template <typename Print>
void print_eval(Print print, const char *tag, const EvalResult &r, double ms, const char *extra = "") {
    print("%s val_loss:%.4f val_bpb:%.4f%s eval_time:%.0fms\n", tag, r.val_loss(), r.val_bpb(), extra, ms);
    print("%s_exact val_loss:%.8f val_bpb:%.8f\n", tag, r.val_loss(), r.val_bpb());
}
