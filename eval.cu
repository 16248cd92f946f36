// eval.cu: scores a model on the validation shards (bits per byte), from a checkpoint (.ckpt)
// or a compressed artifact (.ptz), and prints the tokenizer's byte tables.
//
//   ./eval --checkpoint final_model.ckpt
//   ./eval --artifact final_model.ptz
//   ./eval --dump-tokenizer [--tokenizer-path data/tokenizers/fineweb_1024_bpe.model]
//   ./eval --artifact final_model.ptz --sample "The history of" [--max-new-tokens 128 --temperature 0.8 --top-k 40 --seed 1]
//
// --device auto (the default) scores on the GPU when one is usable, else on the CPU.
//
// The model's shape comes from the file; DATA_PATH, TOKENIZER_PATH and the eval options
// (EVAL_SEQ_LEN, EVAL_STRIDE, ...) from the command line / environment as in ./train_gpt.
#include "common/utils.h"       // defines: fatal, checked I/O, timers
#include "common/config.h"      // defines: Config, the option table
#include "common/tensors.h"     // defines: the parameter list
#include "common/checkpoint.h"  // defines: the .ckpt format
#include "common/tokenizer.h"   // defines: SentencePiece loader, byte LUTs, tokenizer_dump, encode/decode
#include "common/data.h"        // defines: load_val_tokens
#include "common/model.h"       // defines: BatchGeometry, NllFn
#include "common/model_cpu.h"   // defines: the CPU reference model, nll_fn_cpu, model_forward_logits, Rng (for --sample)
#ifndef NO_CUDA
#include "common/model_gpu.cuh"  // defines: the model on the GPU, nll_fn_gpu, model_gpu_last_logits
#endif
#include "common/eval.h"        // defines: eval_standard, eval_sliding
#include "common/quant.h"       // defines: artifact_read, artifact_dequantize
#include <algorithm>
#include <functional>
#include <memory>

static const char *USAGE = "--checkpoint FILE | --artifact FILE | --dump-tokenizer  [--sample PROMPT] [--OPTION VALUE ...]";

// ----------------------------------------------------------------------------
// --sample: text from the model. The prompt is encoded with the SentencePiece model after a BOS
// (every document of the data starts with one); then, token by token, a forward over the last
// EVAL_SEQ_LEN tokens gives the next token's logits, which are divided by the temperature,
// cut to the top k and drawn from with our seeded RNG (the same seed, model and prompt give the
// same text on the CPU; the GPU's bf16 logits may pick differently). Generation stops after
// --max-new-tokens tokens or at a BOS/EOS (the start of another document).

// One draw from softmax(logits / temperature) over the top_k largest (all when 0); the argmax
// when temperature is 0 (the lowest id on a tie).
static int sample_token(const std::vector<float> &logits, double temperature, long top_k, Rng &rng) {
    const int V = (int)logits.size();
    std::vector<int> order(V);
    for (int i = 0; i < V; i++) order[i] = i;
    const int k = top_k > 0 && top_k < V ? (int)top_k : V;
    // a stable order (larger logit first, then lower id) so the draw does not depend on the sort
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    if (temperature == 0) return order[0];
    std::vector<double> p(k);
    double sum = 0;
    for (int i = 0; i < k; i++) sum += p[i] = std::exp((logits[order[i]] - logits[order[0]]) / temperature);
    double u = rng.uniform() * sum;
    for (int i = 0; i < k; i++) {
        if (u < p[i]) return order[i];
        u -= p[i];
    }
    return order[k - 1];
}

static int sample_main(const Config &cfg, const Tokenizer &tok, const std::vector<float> &weights) {
    const int V = (int)cfg.vocab_size, window = (int)cfg.eval_seq_len;
    std::vector<int> ids = {tok.bos_id};
    for (int id : tokenizer_encode(tok, cfg.sample)) ids.push_back(id);
    const size_t n_prompt = ids.size();
    // the next token's logits after ids (the last `window` of them), on the chosen device
    std::function<void(const int *, int, float *)> last_logits;
    std::unique_ptr<ModelCPU<float>> cpu;
#ifndef NO_CUDA
    std::unique_ptr<ModelGPU> gpu;
#endif
    if (cfg.device == "cpu") {
        cpu.reset(new ModelCPU<float>());
        model_build(*cpu, cfg);
        cpu->params_mem = weights;
        last_logits = [&](const int *x, int T, float *out) {
            const float *l = model_forward_logits(*cpu, x, 1, T, T - 1);  // the last position only: row 0
            std::copy(l, l + V, out);
        };
    } else {
#ifdef NO_CUDA
        fatal_config("this eval was built without CUDA (no nvcc at build time): run with --device cpu, or rebuild with nvcc");
#else
        gpu.reset(new ModelGPU());
        model_gpu_build(*gpu, cfg, window, window);  // checks the shape (model_gpu_check_config)
        model_gpu_set_params(*gpu, weights.data());
        last_logits = [&](const int *x, int T, float *out) { model_gpu_last_logits(*gpu, x, T, out); };
#endif
    }
    Rng rng((uint64_t)cfg.seed);
    std::vector<float> logits(V);
    double t0 = now_seconds();
    long n_new = 0;
    for (; n_new < cfg.max_new_tokens; n_new++) {
        const int T = (int)std::min(ids.size(), (size_t)window);
        last_logits(ids.data() + ids.size() - T, T, logits.data());
        for (float l : logits)
            if (!std::isfinite(l)) fatal("%s: the model's logits are not finite (NaN/Inf weights?)", cfg.checkpoint.empty() ? cfg.artifact.c_str() : cfg.checkpoint.c_str());
        const int next = sample_token(logits, cfg.temperature, cfg.top_k, rng);
        if (next == tok.bos_id || next == tok.eos_id) break;
        ids.push_back(next);
    }
    const std::string text = tokenizer_decode(tok, ids.data(), ids.size());
    fwriteCheck(text.data(), 1, text.size(), stdout, "<stdout>");
    printf("\n");
    fprintf(stderr, "sample: device:%s prompt_tokens:%zu new_tokens:%ld seed:%ld temperature:%g top_k:%ld time:%.1fs\n",
            cfg.device.c_str(), n_prompt - 1, n_new, cfg.seed, cfg.temperature, cfg.top_k, now_seconds() - t0);
    return 0;
}

int main(int argc, char **argv) {
    Config cfg;
    config_parse(cfg, argc, argv, P_EVAL, USAGE);
    if (cfg.dump_tokenizer) {
        Tokenizer tok;
        tokenizer_load(tok, cfg.tokenizer_path.c_str());
        tokenizer_dump(tok, stdout);
        return 0;
    }
    if (cfg.checkpoint.empty() == cfg.artifact.empty())
        fatal_config("give exactly one of --checkpoint FILE or --artifact FILE (or --dump-tokenizer); see --help");
    // the device before anything else: an explicit --device cuda without a GPU stops here
    const std::string device_notice = cfg.dry_run ? "" : config_resolve_device(cfg, "eval");
    if (!device_notice.empty()) printf("%s\n", device_notice.c_str());
    // the model: weights and shape from the file
    const std::string path = cfg.checkpoint.empty() ? cfg.artifact : cfg.checkpoint;
    Checkpoint ck;
    if (!cfg.checkpoint.empty()) {
        checkpoint_read(path.c_str(), ck);
    } else {
        Artifact art;
        artifact_read(path.c_str(), art);
        artifact_dequantize(art, ck);
    }
    config_from_checkpoint(cfg, ck, path.c_str());
    const TensorList tl = build_tensor_list(cfg);
    std::vector<float> weights(tl.flat, 0.f);
    checkpoint_to_params(ck, tl, weights.data(), path.c_str());
    printf("%s:%s tensors:%zu model_params:%zu\n", cfg.checkpoint.empty() ? "artifact" : "checkpoint", path.c_str(),
           tl.specs.size(), tl.count);
    if (cfg.dry_run) {
        config_print_table(cfg, P_EVAL, [](const char *fmt, auto... a) { printf(fmt, a...); });
        return 0;
    }

    // tokenizer tables and the val tokens
    Tokenizer tok;
    tokenizer_load(tok, cfg.tokenizer_path.c_str());
    if ((long)tok.pieces.size() != cfg.vocab_size)
        fatal_config("the model's VOCAB_SIZE=%ld does not match the tokenizer %s (%zu pieces)", cfg.vocab_size,
                     cfg.tokenizer_path.c_str(), tok.pieces.size());
    if (!cfg.sample.empty()) return sample_main(cfg, tok, weights);
    ByteLuts luts = tokenizer_byte_luts(tok, (int)cfg.vocab_size);
    const int seq = (int)cfg.eval_seq_len;
    std::vector<uint16_t> val = load_val_tokens(cfg.data_path, seq, (int)cfg.vocab_size);
    if (cfg.val_max_tokens > 0 && (long)val.size() - 1 > cfg.val_max_tokens) {
        long keep = cfg.val_max_tokens / seq * seq;
        if (keep <= 0) fatal_config("VAL_MAX_TOKENS=%ld is shorter than one sequence of %d", cfg.val_max_tokens, seq);
        val.resize(keep + 1);
    }
    printf("val_tokens:%zu eval_seq_len:%d stride:%ld\n", val.size() - 1, seq, cfg.eval_stride);

    // the model on the chosen device, as an NllFn (eval mode)
    NllFn nll;
    std::unique_ptr<ModelCPU<float>> cpu;
#ifndef NO_CUDA
    std::unique_ptr<ModelGPU> gpu;
#endif
    const int batch_seqs = std::max(1, batch_geometry(cfg, 1).val_batch_seqs(cfg, seq));
    if (cfg.device == "cpu") {
        // the weights twice (here and in the model) and the largest forward's activations
        const double need = 2.0 * tl.flat * sizeof(float) +
                            model_cpu_acts_bytes(cfg, std::max(batch_seqs, (int)cfg.eval_batch_seqs), seq, false),
                     have = mem_available_bytes(), GiB = 1073741824.0;
        if (have >= 0 && need > have)
            fatal_config("scoring this model on the cpu needs about %.1f GiB but only %.1f GiB is available (MemAvailable). "
                         "HINT: lower VAL_BATCH_SIZE / --val-batch-size, EVAL_BATCH_SEQS / --eval-batch-seqs or EVAL_SEQ_LEN / --eval-seq-len",
                         need / GiB, have / GiB);
        cpu.reset(new ModelCPU<float>());
        model_build(*cpu, cfg);
        cpu->params_mem = weights;
        nll = nll_fn_cpu(*cpu);
    } else {
#ifdef NO_CUDA
        fatal_config("this eval was built without CUDA (no nvcc at build time): run with --device cpu, or rebuild with nvcc");
#else
        DeviceInfo dev = device_info();
        printf("device:cuda %s\n", dev.name);
        gpu.reset(new ModelGPU());
        model_gpu_build(*gpu, cfg, std::max(batch_seqs, (int)cfg.eval_batch_seqs) * seq, seq);
        model_gpu_set_params(*gpu, weights.data());
        nll = nll_fn_gpu(*gpu);
#endif
    }
    auto print = [](const char *fmt, auto... a) { printf(fmt, a...); fflush(stdout); };
    double t0 = now_seconds();
    EvalResult r = eval_standard(val, seq, batch_seqs, luts, nll);
    print("val_loss:%.4f val_bpb:%.4f eval_time:%.0fms\n", r.val_loss(), r.val_bpb(), 1000.0 * (now_seconds() - t0));
    print("val_loss_exact:%.8f val_bpb_exact:%.8f\n", r.val_loss(), r.val_bpb());
    if (cfg.eval_stride > 0 && cfg.eval_stride < seq) {
        t0 = now_seconds();
        EvalResult sw = eval_sliding(val, seq, (int)cfg.eval_stride, (int)cfg.eval_batch_seqs, luts, nll);
        print("sliding_window stride:%ld val_loss:%.4f val_bpb:%.4f eval_time:%.0fms\n", cfg.eval_stride, sw.val_loss(), sw.val_bpb(),
              1000.0 * (now_seconds() - t0));
        print("sliding_window_exact stride:%ld val_loss:%.8f val_bpb:%.8f\n", cfg.eval_stride, sw.val_loss(), sw.val_bpb());
    }
    return 0;
}
