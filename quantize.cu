// quantize.cu: checkpoint (.ckpt) -> compressed artifact (.ptz), the reference's export:
// int6 GPTQ-lite / int5 / int8 per row, fp16 passthrough for small tensors, zstd level 22.
//
//   ./quantize --checkpoint final_model.ckpt --out final_model.ptz
//   ./quantize --checkpoint final_model.ckpt --dequantize --out roundtrip.ckpt
#include "common/utils.h"       // defines: fatal, checked I/O
#include "common/config.h"      // defines: Config, the option table
#include "common/tensors.h"     // defines: the parameter list, quant_class
#include "common/checkpoint.h"  // defines: the .ckpt format

static const char *USAGE = "--checkpoint FILE --out FILE [--dequantize]";

int main(int argc, char **argv) {
    Config cfg;
    config_parse(cfg, argc, argv, P_QUANT, USAGE);
    if (cfg.checkpoint.empty()) fatal_config("--checkpoint FILE is required; see --help");
    Checkpoint ck;
    checkpoint_read(cfg.checkpoint.c_str(), ck);
    config_from_checkpoint(cfg, ck, cfg.checkpoint.c_str());
    TensorList tl = build_tensor_list(cfg);
    std::vector<float> params(tl.total);
    checkpoint_to_params(ck, tl, params.data(), cfg.checkpoint.c_str());
    static const char *qc_names[] = {"embed", "mlp", "attn", "other"};
    for (const TensorSpec &s : tl.specs)
        printf("%-32s %-5s %10zu %s\n", s.name.c_str(), dtype_name(s.dtype), s.numel, qc_names[quant_class(s.name)]);
    printf("model_params:%zu\n", tl.total);
    if (cfg.dry_run) return 0;
    fatal_config("quantization is not built yet (issue [C]); the checkpoint above was read and validated");
}
