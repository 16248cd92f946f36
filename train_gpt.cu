// train_gpt.cu: trains the parameter-golf GPT ("11L + XSA4 + EMA + Late QAT + GPTQ-lite"),
// then runs the reference's finale (EMA -> eval -> quantize -> zstd -> roundtrip eval).
//
//   make train_gpt && ./train_gpt                       # seed preset, data in ./data
//   ./train_gpt --preset record --dry-run                # print the config and parameter count
//   NUM_LAYERS=2 MODEL_DIM=128 ./train_gpt --device cpu  # the CPU reference path, tiny configs
//
// Reads top to bottom like the reference script: config, data, model, loop, finale. Everything
// reusable lives in common/.
#include "common/utils.h"       // defines: fatal, checked I/O, Logger, timers
#include "common/config.h"      // defines: Config, the option table, presets, validation
#include "common/tensors.h"     // defines: the parameter list, Params<T>, build_tensor_list
#include "common/checkpoint.h"  // defines: the .ckpt format
#include "common/data.h"        // defines: shard reader, TrainLoader, load_val_tokens
#include "common/tokenizer.h"   // defines: SentencePiece loader, byte LUTs

static const char *USAGE = "[--preset seed|record] [--dry-run] [--device cuda|cpu] [--OPTION VALUE ...]";

// Where to get data, for the error message when there is none.
static void require_data(const Config &c) {
    bool have_dir = dir_exists(c.data_path.c_str()), have_tok = file_exists(c.tokenizer_path.c_str());
    if (have_dir && have_tok) return;
    std::string what;
    if (!have_dir) what = "no data directory at DATA_PATH=" + c.data_path;
    if (!have_tok) what += (what.empty() ? "" : " and ") + std::string("no tokenizer at TOKENIZER_PATH=") + c.tokenizer_path;
    fatal("%s. HINT: `make data` downloads the FineWeb sp1024 shards (or builds a small offline dataset when "
          "Hugging Face is unreachable); dev/data/tokenize_text.py turns your own text into shards; or point "
          "--data-path/DATA_PATH and --tokenizer-path/TOKENIZER_PATH at existing files", what.c_str());
}

int main(int argc, char **argv) {
    Config cfg;
    config_parse(cfg, argc, argv, P_TRAIN, USAGE);
    const char *ws_env = getenv("WORLD_SIZE");
    int world_size = ws_env ? atoi(ws_env) : 1;
    config_check_batch(cfg, world_size);
    TensorList tl = build_tensor_list(cfg);

    if (cfg.dry_run) {
        config_print_table(cfg, P_TRAIN, [](const char *fmt, auto... a) { printf(fmt, a...); });
        printf("model_params:%zu\n", tl.total);
        return 0;
    }

    require_data(cfg);
    Logger log;
    log.open(cfg.run_id);
    log.printf("%s\n", log.path.c_str());
    config_print_table(cfg, P_TRAIN, [&](const char *fmt, auto... a) { log.printf(fmt, a...); });
    log.printf("model_params:%zu\n", tl.total);

    // tokenizer and its byte tables (bits per byte)
    Tokenizer tok;
    tokenizer_load(tok, cfg.tokenizer_path.c_str());
    if ((long)tok.pieces.size() != cfg.vocab_size)
        fatal_config("VOCAB_SIZE=%ld does not match the tokenizer %s (%zu pieces)", cfg.vocab_size, cfg.tokenizer_path.c_str(),
                     tok.pieces.size());
    ByteLuts luts = tokenizer_byte_luts(tok, (int)cfg.vocab_size);
    log.printf("val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=%s\n", cfg.tokenizer_path.c_str());

    // data: the validation tokens and the train stream
    long val_seq = std::max(cfg.train_seq_len, cfg.eval_seq_len);
    std::vector<uint16_t> val_tokens = load_val_tokens(cfg.data_path, (int)val_seq, (int)cfg.vocab_size);
    std::vector<std::string> train_files = list_shards(cfg.data_path, "fineweb_train_");
    log.printf("train_loader:dataset:%s train_shards:%zu\n", cfg.data_path.c_str(), train_files.size());
    if (file_exists((cfg.data_path + "/NOT_FINEWEB.txt").c_str()))
        log.printf("warning: %s is the offline stand-in dataset (NOT FineWeb): losses are not comparable to the leaderboard\n",
                   cfg.data_path.c_str());
    log.printf("val_loader:shards pattern=%s/fineweb_val_*.bin tokens:%zu\n", cfg.data_path.c_str(), val_tokens.size() - 1);
    (void)luts;

    fatal_config("the training loop is not built yet (issues [B] CPU path and [E] GPU path); "
                 "--dry-run, the data and tokenizer checks above work");
}
