// eval.cu: scores a model on the validation shards (bits per byte), from a checkpoint (.ckpt)
// or a compressed artifact (.ptz), and prints the tokenizer's byte tables.
//
//   ./eval --checkpoint final_model.ckpt
//   ./eval --artifact final_model.ptz
//   ./eval --dump-tokenizer [--tokenizer-path data/tokenizers/fineweb_1024_bpe.model]
//
// The model's shape comes from the file; DATA_PATH, TOKENIZER_PATH and the eval options
// (EVAL_SEQ_LEN, EVAL_STRIDE, ...) from the command line / environment as in ./train_gpt.
#include "common/utils.h"       // defines: fatal, checked I/O, timers
#include "common/config.h"      // defines: Config, the option table
#include "common/tensors.h"     // defines: the parameter list
#include "common/checkpoint.h"  // defines: the .ckpt format
#include "common/tokenizer.h"   // defines: SentencePiece loader, byte LUTs, tokenizer_dump
#include "common/data.h"        // defines: load_val_tokens
#include "common/model.h"       // defines: BatchGeometry, NllFn
#include "common/model_cpu.h"   // defines: the CPU reference model, nll_fn_cpu
#ifndef NO_CUDA
#include "common/model_gpu.cuh"  // defines: the model on the GPU, nll_fn_gpu
#endif
#include "common/eval.h"        // defines: eval_standard, eval_sliding
#include "common/quant.h"       // defines: artifact_read, artifact_dequantize
#include <memory>

static const char *USAGE = "--checkpoint FILE | --artifact FILE | --dump-tokenizer  [--OPTION VALUE ...]";

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
