// quantize.cu: checkpoint (.ckpt) -> compressed artifact (.ptz), the reference's export:
// int6 GPTQ-lite / int5 / int8 per row, fp16 passthrough for small tensors, zstd level 22.
// Then the submission size: the artifact plus the source code train_gpt is built from.
//
//   ./quantize --checkpoint final_model.ckpt --out final_model.ptz
//   ./quantize --checkpoint final_model.ckpt --dequantize --out roundtrip.ckpt
//
// --dequantize runs the same path (quantize, compress, decompress) and writes the decompressed
// weights, in their training dtypes, as a checkpoint: what eval scores for the "roundtrip" line.
// The formulas and the file format are documented in common/quant.h.
#include "common/utils.h"       // defines: fatal, checked I/O, timers
#include "common/config.h"      // defines: Config, the option table
#include "common/tensors.h"     // defines: the parameter list, quant_class
#include "common/checkpoint.h"  // defines: the .ckpt format
#include "common/quant.h"       // defines: artifact_quantize/serialize/parse/dequantize, code_files, artifact_report

static const char *USAGE = "--checkpoint FILE --out FILE [--dequantize] [--source-dir DIR] [--zstd-level N]";

int main(int argc, char **argv) {
    Config cfg;
    config_parse(cfg, argc, argv, P_QUANT, USAGE);
    const int level = (int)cfg.zstd_level;
    if (cfg.checkpoint.empty()) fatal_config("--checkpoint FILE is required; see --help");
    if (cfg.out.empty() && !cfg.dry_run) fatal_config("--out FILE is required; see --help");
    // the code's size first: a missing source tree should stop us before minutes of compression
    CodeFiles code;
    if (!cfg.dry_run) code = code_files(find_source_dir(cfg.source_dir), "train_gpt.cu", level);

    // read and validate the model: the config comes from the file, the tensors must match it
    Checkpoint ck;
    checkpoint_read(cfg.checkpoint.c_str(), ck);
    config_from_checkpoint(cfg, ck, cfg.checkpoint.c_str());
    TensorList tl = build_tensor_list(cfg);
    {
        std::vector<float> params(tl.flat);
        checkpoint_to_params(ck, tl, params.data(), cfg.checkpoint.c_str());
    }
    printf("checkpoint: %s (%zu tensors, MLP_QUANT_BITS=%ld)\n", cfg.checkpoint.c_str(), tl.specs.size(), cfg.mlp_quant_bits);
    printf("model_params:%zu\n", tl.count);
    if (cfg.dry_run) {
        // the plan: which scheme each tensor gets
        for (const TensorSpec &s : tl.specs)
            printf("  %-32s %-5s %10zu %s\n", s.name.c_str(), dtype_name(s.dtype), s.numel,
                   qscheme_name(quant_scheme_for(s.name, s.dtype, s.numel, (int)cfg.mlp_quant_bits)));
        return 0;
    }
    double t0 = now_seconds();
    Artifact art;
    artifact_quantize(ck, (int)cfg.mlp_quant_bits, art, cfg.checkpoint.c_str(), cfg.quant_pct_per_row);
    double t1 = now_seconds();
    printf("quant: quantized in %.1f s; compressing with zstd level %d ...%s\n", t1 - t0, level, zstd_level_note(level).c_str());
    fflush(stdout);
    std::vector<uint8_t> file = artifact_serialize(art, level);
    double t2 = now_seconds();
    // read back what we are about to write: the artifact is only good if it parses again
    Artifact back;
    std::string err;
    if (!artifact_parse(file.data(), file.size(), back, &err)) fatal("internal: the artifact does not parse back (%s)", err.c_str());
    printf("quant: zstd level %d in %.1f s\n", level, t2 - t1);
    for (const std::string &line : artifact_report(art, file.size(), code, level)) printf("%s\n", line.c_str());

    // reconstruction error of what the artifact decompresses to, per quantization scheme
    Checkpoint deq;
    artifact_dequantize(back, deq);
    double sq[6] = {0}, cnt[6] = {0};
    for (const QTensor &qt : back.tensors) {
        const CkptTensor *a = ck.find(qt.name), *b = deq.find(qt.name);
        if (!a || !b || !dtype_is_float(a->dtype)) continue;
        for (size_t i = 0, n = shape_numel(a->shape); i < n; i++) {
            double d = (double)ckpt_float_at(*a, i) - (double)ckpt_float_at(*b, i);
            sq[qt.scheme] += d * d;
            cnt[qt.scheme] += 1;
        }
    }
    printf("quant: reconstruction mse%s:", cfg.quant_pct_per_row ? " (percentile per row)" : "");
    for (QScheme q : {QS_INT6, QS_INT5, QS_INT8, QS_FP16})
        if (cnt[q] > 0) printf(" %s %.6e (%.0f values)", qscheme_name(q), sq[q] / cnt[q], cnt[q]);
    printf("\n");

    if (cfg.dequantize) {
        Checkpoint out;
        artifact_dequantize(back, out);
        checkpoint_write(cfg.out.c_str(), out);
        printf("wrote %s: the dequantized weights (%zu tensors)\n", cfg.out.c_str(), out.tensors.size());
    } else {
        write_file_bytes(cfg.out.c_str(), file.data(), file.size());
        printf("wrote %s: %zu bytes\n", cfg.out.c_str(), file.size());
    }
    return 0;
}
