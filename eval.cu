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
    if (!cfg.checkpoint.empty()) {
        Checkpoint ck;
        checkpoint_read(cfg.checkpoint.c_str(), ck);
        config_from_checkpoint(cfg, ck, cfg.checkpoint.c_str());
        TensorList tl = build_tensor_list(cfg);
        std::vector<float> params(tl.total);
        checkpoint_to_params(ck, tl, params.data(), cfg.checkpoint.c_str());
        printf("checkpoint:%s tensors:%zu model_params:%zu\n", cfg.checkpoint.c_str(), tl.specs.size(), tl.total);
        if (cfg.dry_run) {
            config_print_table(cfg, P_EVAL, [](const char *fmt, auto... a) { printf(fmt, a...); });
            return 0;
        }
    } else if (!file_exists(cfg.artifact.c_str())) {
        fatal("%s: no such file", cfg.artifact.c_str());
    }
    fatal_config("scoring is not built yet (issue [C]); the checkpoint above was read and validated");
}
