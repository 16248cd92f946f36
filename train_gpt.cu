// train_gpt.cu: trains the parameter-golf GPT ("11L + XSA4 + EMA + Late QAT + GPTQ-lite"),
// then runs the reference's finale (EMA -> eval -> quantize -> zstd -> roundtrip eval).
//
//   make train_gpt && ./train_gpt                       # seed preset on one GPU, data in ./data
//   ./train_gpt --preset record --dry-run                # print the config and parameter count
//   NUM_LAYERS=2 MODEL_DIM=128 ./train_gpt --device cpu  # the CPU reference path, tiny configs
//   ./train_gpt --save-every 100 ...; ./train_gpt --resume train_state.ckpt ...  # checkpoint, continue
//   ./train_gpt --nproc 2 ...                            # data parallel over 2 GPUs (default: every visible GPU)
//
// Reads top to bottom like the reference script: config, data, model, loop, finale. One loop
// (train) drives either device through the Trainer interface: TrainerCPU wraps the reference
// model of model_cpu.h, TrainerGPU the kernels of model_gpu.cuh and optim.cuh. Everything
// reusable lives in common/.
#include "common/utils.h"       // defines: fatal, checked I/O, Logger, timers
#include "common/config.h"      // defines: Config, the option table, presets, validation
#include "common/tensors.h"     // defines: the parameter list, Params<T>, build_tensor_list
#include "common/checkpoint.h"  // defines: the .ckpt format
#include "common/data.h"        // defines: shard reader, TrainLoader, load_val_tokens
#include "common/tokenizer.h"   // defines: SentencePiece loader, byte LUTs
#include "common/model.h"       // defines: BatchGeometry, QatMode, NllFn, the layer facts both models share
#include "common/model_cpu.h"   // defines: the CPU reference model (forward, backward, init), nll_fn_cpu
#ifndef NO_CUDA
#include "common/model_gpu.cuh"  // defines: the model on the GPU (and every kernel header it uses), nll_fn_gpu
#endif
#include "common/optim.h"       // defines: schedules, Muon, AdamW, clipping, EMA (CPU)
#ifndef NO_CUDA
#include "common/optim.cuh"      // defines: Muon, AdamW, clipping, EMA on the GPU
#endif
#include "common/eval.h"        // defines: standard and sliding-window bits-per-byte
#include "common/quant.h"       // defines: the artifact (int6/int5/int8 + zstd), code size
#include "common/dist.h"        // defines: the launcher, rendezvous, control-plane collectives, NCCL
#include <csignal>
#include <memory>
#include <unistd.h>

static const char *USAGE = "[--preset seed|record] [--dry-run] [--device auto|cuda|cpu] [--OPTION VALUE ...]";

// The README's small CPU example: what the memory refusal suggests instead.
static const char *SMALL_CPU_EXAMPLE =
    "NUM_LAYERS=2 MODEL_DIM=128 BIGRAM_DIM=64 TRAIN_SEQ_LEN=256 EVAL_SEQ_LEN=256 TRAIN_BATCH_TOKENS=4096 ITERATIONS=200 "
    "WARMDOWN_ITERS=60 MAX_WALLCLOCK_SECONDS=0 VAL_MAX_TOKENS=65536 TRAIN_LOG_EVERY=20 ./train_gpt --device cpu";

// Where to get data, for the error message when there is none.
static void require_data(const Config &c) {
    bool have_dir = dir_exists(c.data_path.c_str()), have_tok = c.train_only || file_exists(c.tokenizer_path.c_str());
    if (have_dir && have_tok) return;
    std::string what;
    if (!have_dir) what = "no data directory at DATA_PATH=" + c.data_path;
    if (!have_tok) what += (what.empty() ? "" : " and ") + std::string("no tokenizer at TOKENIZER_PATH=") + c.tokenizer_path;
    fatal("%s. HINT: `make data` downloads the FineWeb sp1024 shards (or builds a small offline dataset when "
          "Hugging Face is unreachable); dev/data/tokenize_text.py turns your own text into shards; or point "
          "--data-path/DATA_PATH and --tokenizer-path/TOKENIZER_PATH at existing files", what.c_str());
}

// ----------------------------------------------------------------------------
// the training state on the host: what checkpoints hold and what the warmup undoes

// The full training state as a checkpoint: the weights under their own names (f32), then the
// EMA and the optimizer state under "ema/", "muon_buf/", "adam_m/", "adam_v/" prefixes, and the
// counters (step, Adam's t, the data cursor, QAT, the training clock) as config entries. Names
// with a '/' are ignored by checkpoint_to_params, so a state file also loads as plain weights.
struct RunCounters {
    long step = 0, file_idx = 0, pos = 0;
    int qat = 0;
    double training_ms = 0;
};

// Everything the warmup must undo and a checkpoint must hold, in host memory (flat layout).
struct HostState {
    std::vector<float> params, ema;
    OptimState opt;
};

static void save_train_state(const std::string &path, const Config &cfg, const TensorList &tl, const HostState &st,
                             const RunCounters &rc) {
    Checkpoint ck;
    checkpoint_set_config(ck, cfg);
    enum Which { ALL, MUON_ONLY, ADAM_ONLY };  // the moments exist only for their optimizer's tensors
    auto add = [&](const std::string &prefix, const std::vector<float> &buf, Which which) {
        for (const TensorSpec &s : tl.specs) {
            if ((which == MUON_ONLY && s.group != OPT_MUON) || (which == ADAM_ONLY && s.group == OPT_MUON)) continue;
            CkptTensor t{prefix + s.name, DT_F32, s.shape, {}};
            t.data.resize(s.numel * 4);
            memcpy(t.data.data(), buf.data() + s.offset, s.numel * 4);
            ck.tensors.push_back(std::move(t));
        }
    };
    add("", st.params, ALL);
    add("ema/", st.ema, ALL);
    add("muon_buf/", st.opt.muon_buf, MUON_ONLY);
    add("adam_m/", st.opt.adam_m, ADAM_ONLY);
    add("adam_v/", st.opt.adam_v, ADAM_ONLY);
    char buf[64];
    auto put = [&](const char *k, const char *fmt, auto v) { snprintf(buf, sizeof buf, fmt, v); ck.config.emplace_back(k, buf); };
    put("STATE_STEP", "%ld", rc.step);
    put("STATE_ADAM_T", "%ld", st.opt.adam_t);
    put("STATE_FILE_IDX", "%ld", rc.file_idx);
    put("STATE_POS", "%ld", rc.pos);
    put("STATE_QAT", "%d", rc.qat);
    put("STATE_TRAINING_MS", "%.17g", rc.training_ms);
    checkpoint_write(path.c_str(), ck);
}

// Reads a state file and checks it against this run (the model's shape, the counters) before
// anything large is allocated; load_train_state unpacks it later.
static RunCounters read_train_state(const std::string &path, const Config &cfg, Checkpoint &ck) {
    checkpoint_read(path.c_str(), ck);
    for (int i = 0; i < NUM_OPTIONS; i++) {  // the model must be the one we build
        if (!model_option(i)) continue;
        const char *key = OPTIONS[i].env;
        const std::string *v = ck.get(key);
        if (v && *v != config_get(cfg, i))
            fatal("%s: the state is for %s=%s but this run has %s=%s", path.c_str(), key, v->c_str(), key, config_get(cfg, i).c_str());
    }
    auto get = [&](const char *k) {
        const std::string *v = ck.get(k);
        if (!v) fatal("%s: not a training state (no %s; write one with --save-every)", path.c_str(), k);
        return *v;
    };
    RunCounters rc;
    rc.step = atol(get("STATE_STEP").c_str());
    rc.file_idx = atol(get("STATE_FILE_IDX").c_str());
    rc.pos = atol(get("STATE_POS").c_str());
    rc.qat = atoi(get("STATE_QAT").c_str());
    rc.training_ms = atof(get("STATE_TRAINING_MS").c_str());
    get("STATE_ADAM_T");
    if (rc.step < 0) fatal("%s: corrupt training state (STATE_STEP=%ld)", path.c_str(), rc.step);
    return rc;
}

// Fills st (sized to the tensor list's flat layout, gaps zero) from a state read_train_state checked.
static void load_train_state(const std::string &path, const Checkpoint &ck, const TensorList &tl, HostState &st) {
    st.params.assign(tl.flat, 0.f);
    st.ema.assign(tl.flat, 0.f);
    st.opt.init(tl.flat);
    st.opt.adam_t = atol(ck.get("STATE_ADAM_T")->c_str());
    auto take = [&](const std::string &prefix, std::vector<float> &buf, bool muon_only, bool adam_only) {
        for (const TensorSpec &s : tl.specs) {
            if ((muon_only && s.group != OPT_MUON) || (adam_only && s.group == OPT_MUON)) continue;
            const CkptTensor *t = ck.find(prefix + s.name);
            if (!t || t->dtype != DT_F32 || t->shape != s.shape)
                fatal("%s: training state tensor %s%s is missing or has the wrong shape/dtype", path.c_str(), prefix.c_str(), s.name.c_str());
            memcpy(buf.data() + s.offset, t->data.data(), s.numel * 4);
        }
    };
    take("", st.params, false, false);
    take("ema/", st.ema, false, false);
    take("muon_buf/", st.opt.muon_buf, true, false);
    take("adam_m/", st.opt.adam_m, false, true);
    take("adam_v/", st.opt.adam_v, false, true);
}

// ----------------------------------------------------------------------------
// the two devices behind one training loop
//
// The loop (train() below) owns the schedule, the clocks, validation, logging and checkpoints;
// a Trainer owns the model, the optimizer state and the EMA on its device.

struct StepResult {
    double loss = 0, grad_norm = 0;
    bool finite = true;  // false: loss or gradient norm is NaN/Inf and the update was NOT applied
};

struct Trainer {
    virtual ~Trainer() = default;
    double ema_decay = 0;  // decay of the next step's EMA update: ema_decay_at(step), set by the loop
    // One optimizer step: grad_accum micro-batches of forward+backward from the loader, global-norm
    // clipping, Muon/AdamW at base LR x lr_mult, then the EMA update. Finished when it returns.
    virtual StepResult step(TrainLoader &loader, double lr_mult, double muon_mu, QatMode qat) = 0;
    virtual void ema_reset() = 0;            // EMA <- the current weights
    virtual NllFn nll() = 0;                 // per-position losses of the current weights (eval mode)
    virtual void get(HostState &st) = 0;     // weights, EMA, optimizer state -> host
    virtual void set(const HostState &st) = 0;
    virtual void set_params(const std::vector<float> &params) = 0;  // weights only (finale)
    virtual double report_memory(Logger &log) = 0;  // logs the device memory; returns the bytes in use (0 on the CPU)
    // PROFILE: the GPU trainer times the steps it is told to by kernel family (cuda_utils.cuh's
    // Profiler) and prints the breakdown at the end; the CPU trainer has no profiler.
    bool profile_next = false;  // set by the loop before a step
    virtual bool can_profile() const { return false; }
    virtual void report_profile(Logger &, double /*wall_profiled_ms*/, double /*wall_plain_ms*/) {}
};

struct TrainerCPU : Trainer {
    const Config &cfg;
    BatchGeometry geo;
    Dist &dist;
    ModelCPU<float> model;
    OptimState opt;
    std::vector<float> ema;
    std::vector<int32_t> x, y;
    TrainerCPU(const Config &c, const std::vector<float> &init, BatchGeometry g, Dist &d) : cfg(c), geo(g), dist(d) {
        model_build(model, cfg);
        model.params_mem = init;
        opt.init(model.tensors.flat);
        ema = init;
    }
    StepResult step(TrainLoader &loader, double lr_mult, double muon_mu, QatMode qat) override {
        model.qat = qat;
        model_zero_grad(model);
        StepResult r;
        for (int micro = 0; micro < geo.grad_accum; micro++) {
            loader.next_batch(cfg.train_batch_tokens, geo.grad_accum, x, y);
            r.loss += model_forward(model, x.data(), y.data(), geo.B, geo.T);
            model_backward(model, 1.0f / geo.grad_accum);
        }
        r.loss /= geo.grad_accum;
        if (dist.world_size > 1) {
            // data parallel: every rank gets the average of all ranks' gradients (summed in rank
            // order over the control sockets, so bit-identical everywhere); the loss too, so the
            // logged loss is the whole batch's at any world size
            float *g = model.grads_mem.data();
            dist_allreduce_sum(dist, g, model.tensors.flat, "gradient all-reduce");
            for (size_t i = 0; i < model.tensors.flat; i++) g[i] /= (float)dist.world_size;
            dist_allreduce_sum(dist, &r.loss, 1, "loss all-reduce");
            r.loss /= dist.world_size;
        }
        r.grad_norm = clip_grad_norm_cpu(model.grads_mem.data(), model.tensors.flat, cfg.grad_clip_norm);
        r.finite = std::isfinite(r.loss) && std::isfinite(r.grad_norm);
        if (!r.finite) return r;
        optimizer_step_cpu(cfg, model.tensors, model.params_mem.data(), model.grads_mem.data(), opt, lr_mult, muon_mu);
        ema_update_cpu(ema.data(), model.params_mem.data(), model.tensors.flat, ema_decay);
        return r;
    }
    void ema_reset() override { ema = model.params_mem; }
    NllFn nll() override { return nll_fn_cpu(model); }
    void get(HostState &st) override { st.params = model.params_mem; st.ema = ema; st.opt = opt; }
    void set(const HostState &st) override { model.params_mem = st.params; ema = st.ema; opt = st.opt; }
    void set_params(const std::vector<float> &params) override { model.params_mem = params; }
    double report_memory(Logger &) override { return 0; }
};

#ifndef NO_CUDA
// The GPU trainer: the model of model_gpu.cuh, the optimizer of optim.cuh, the EMA in fp32 on
// the device. One stream; the host syncs twice a step: to read the loss and gradient norm before
// the update (a NaN must not reach the weights) and at the end (honest step times).
struct TrainerGPU : Trainer {
    const Config &cfg;
    BatchGeometry geo;
    Dist &dist;
    ModelGPU model;
    OptimizerGPU opt;
    float *ema = nullptr;  // (flat) fp32
    std::vector<int32_t> x, y;
    TrainerGPU(const Config &c, const std::vector<float> &init, BatchGeometry g, Dist &d, int max_N, int max_T) : cfg(c), geo(g), dist(d) {
        model_gpu_build(model, cfg, max_N, max_T);
        optimizer_gpu_create(opt, cfg, model.tensors);
        cudaCheck(cudaMalloc(&ema, model.tensors.flat * sizeof(float)));
        model_gpu_set_params(model, init.data());
        ema_reset();
    }
    ~TrainerGPU() override {
        cudaFreeCheck(ema);
        optimizer_gpu_free(opt);
        model_gpu_free(model);
    }
    long profiled_steps = 0;
    StepResult step(TrainLoader &loader, double lr_mult, double muon_mu, QatMode qat) override {
        const cudaStream_t st = 0;
        profiler().on = profile_next;  // every launcher below records its family's time
        model.qat = qat;  // the first forward refreshes the bf16 weights if they are stale
        model_gpu_zero_grad(model, st);
        for (int micro = 0; micro < geo.grad_accum; micro++) {
            loader.next_batch(cfg.train_batch_tokens, geo.grad_accum, x, y);  // overlaps the GPU's work
            model_gpu_upload(model, x.data(), y.data(), geo.B, geo.T, st);
            model_gpu_forward(model, 1.0f / geo.grad_accum, true, micro > 0, st);
            model_gpu_backward(model, st);
        }
#ifdef USE_NCCL
        if (dist.nccl) {
            // data parallel: the average of all ranks' gradients (the whole flat buffer, one
            // call; the gaps between tensors are zero) and of the loss, on the training stream,
            // so the clipping below sees the global gradient norm
            ProfScope prof_(PROF_COMM, st);
            dist_nccl_all_reduce(dist, model.grads, model.tensors.flat, ncclAvg, st, "gradient all-reduce");
            dist_nccl_all_reduce(dist, model.loss_acc, 1, ncclAvg, st, "loss all-reduce");
        }
#endif
        clip_grad_norm(opt, model.grads, cfg.grad_clip_norm, /*scale_now=*/false, st);
        StepResult r;
        float loss = 0;
        cudaCheck(cudaMemcpyAsync(&r.grad_norm, opt.d_grad_norm, sizeof(double), cudaMemcpyDeviceToHost, st));
        cudaCheck(cudaMemcpyAsync(&loss, model.loss_acc, sizeof(float), cudaMemcpyDeviceToHost, st));
        sync(st, "training step");
        r.loss = loss;
        r.finite = std::isfinite(r.loss) && std::isfinite(r.grad_norm);
        if (!r.finite) {
            profiler().on = false;
            profiler_reset();  // (the run ends: nothing to report)
            return r;
        }
        optimizer_step(opt, cfg, model.params, model.grads, lr_mult, muon_mu, opt.d_clip_coef, st);
        model_gpu_params_changed(model);
        ema_update(ema, model.params, model.tensors.flat, ema_decay, st);
        sync(st, "optimizer step");
        if (profile_next) {  // the step is finished: its events are ready
            profiler_collect();
            profiler().on = false;
            profiled_steps++;
        }
        return r;
    }
    // a stream wait; with NCCL, one that notices a dead rank or an NCCL error instead of hanging
    void sync(cudaStream_t st, const char *what) {
#ifdef USE_NCCL
        if (dist.nccl) return dist_nccl_sync(dist, st, what);
#endif
        cudaCheck(cudaStreamSynchronize(st));
    }
    void ema_reset() override {
        cudaCheck(cudaMemcpy(ema, model.params, model.tensors.flat * sizeof(float), cudaMemcpyDeviceToDevice));
    }
    NllFn nll() override { return nll_fn_gpu(model); }
    void get(HostState &st) override {
        st.params.resize(model.tensors.flat);
        st.ema.resize(model.tensors.flat);
        model_gpu_get_params(model, st.params.data());
        cudaCheck(cudaMemcpy(st.ema.data(), ema, model.tensors.flat * sizeof(float), cudaMemcpyDeviceToHost));
        optim_state_download(opt, st.opt);
    }
    void set(const HostState &st) override {
        model_gpu_set_params(model, st.params.data());
        cudaCheck(cudaMemcpy(ema, st.ema.data(), model.tensors.flat * sizeof(float), cudaMemcpyHostToDevice));
        optim_state_upload(opt, st.opt);
    }
    void set_params(const std::vector<float> &params) override { model_gpu_set_params(model, params.data()); }
    double report_memory(Logger &log) override {
        size_t free_b = 0, total_b = 0;
        cudaCheck(cudaMemGetInfo(&free_b, &total_b));
        log.printf("gpu_memory: model+activations %.0f MiB, device in use %.0f of %.0f MiB\n", model_gpu_bytes(model) / 1048576.0,
                   (total_b - free_b) / 1048576.0, total_b / 1048576.0);
        return (double)(total_b - free_b);
    }
    bool can_profile() const override { return true; }
    // The breakdown of the profiled steps, one grep-able line per family (dev/bench.sh parses them):
    //   profile: <family> ms/step:X ms/micro:Y share:Z% calls/step:N
    // ms/micro is ms/step over the micro-steps (a family's share of one forward+backward when it
    // lives there; the optimizer's is spread over them too). The families add up to the GPU time
    // from the step's first launch to its last; the wall time of a step also has the host's
    // work before the first launch (the first micro-batch) and after the last.
    void report_profile(Logger &log, double wall_profiled_ms, double wall_plain_ms) override {
        const Profiler &p = profiler();
        if (profiled_steps == 0) return;
        const double n = (double)profiled_steps;
        double total = 0;
        for (int f = 0; f < PROF_FAMILIES; f++) total += p.ms[f];
        log.printf("profile: %ld profiled steps of %d micro-steps (every other timed step; the others ran unprofiled)\n",
                   profiled_steps, geo.grad_accum);
        for (int f = 0; f < PROF_FAMILIES; f++)
            log.printf("profile: %-22s ms/step:%9.2f ms/micro:%8.3f share:%5.1f%% calls/step:%7.1f\n", prof_family_name(f), p.ms[f] / n,
                       p.ms[f] / n / geo.grad_accum, total > 0 ? 100.0 * p.ms[f] / total : 0.0, p.calls[f] / n);
        log.printf("profile: %-22s ms/step:%9.2f ms/micro:%8.3f share:100.0%%\n", "total GPU time", total / n, total / n / geo.grad_accum);
        log.printf("profile_wall: profiled ms/step:%.2f unprofiled ms/step:%.2f (the profiler's events cost %+.1f%%)\n",
                   wall_profiled_ms, wall_plain_ms, wall_plain_ms > 0 ? 100.0 * (wall_profiled_ms / wall_plain_ms - 1) : 0.0);
    }
};
#endif

// OUT_DIR and its parents (mkdir -p), checked at the start: not after the run, when the results are written.
static void make_out_dir(const std::string &dir) {
    for (size_t i = 1; i <= dir.size(); i++)
        if (i == dir.size() || dir[i] == '/') mkdir(dir.substr(0, i).c_str(), 0755);  // fine if it exists
    if (!dir_exists(dir.c_str()) || access(dir.c_str(), W_OK) != 0)
        fatal("OUT_DIR=%s: cannot create it or write there (%s)", dir.c_str(), strerror(errno));
}

// ----------------------------------------------------------------------------
// memory: what a run needs on its device, checked before anything large is allocated

// Refuses a run that cannot fit, with the estimate and a config that does: on the CPU against
// MemAvailable, on the GPU against cudaMemGetInfo's free bytes. The estimate counts the fp32
// copies of the weights (model, gradients, QAT copy, EMA, Muon/Adam state, the host copies that
// warmup, checkpoints and the finale use) and the largest activations (training forward+backward,
// the evals' forwards).
static void check_memory(const Config &cfg, const TensorList &tl, const BatchGeometry &geo, int val_batch_seqs, Logger &log) {
    const double GiB = 1073741824.0, flat = (double)tl.flat * sizeof(float);
    const double host_copies = 1 /*init*/ + 5 /*HostState: weights, EMA, 3 optimizer buffers*/ + (cfg.resume.empty() ? 0 : 5) /*the state file*/;
    double need = 0, have = 0;
    std::string where;
    if (cfg.device == "cpu") {
        const double acts = model_cpu_acts_bytes(cfg, geo.B, geo.T, true) + (cfg.train_only ? 0.0 :
                            std::max(model_cpu_acts_bytes(cfg, val_batch_seqs, (int)cfg.train_seq_len, false),
                                     model_cpu_acts_bytes(cfg, (int)cfg.eval_batch_seqs, (int)cfg.eval_seq_len, false)));
        need = flat * (3 /*params, grads, QAT copy*/ + 1 /*EMA*/ + 3 /*optimizer*/ + host_copies) + acts;
        have = mem_available_bytes();
        if (have < 0) return;  // no /proc: nothing to compare against
        where = "available RAM (MemAvailable)";
    } else {
#ifndef NO_CUDA
        const long max_N = std::max({(long)geo.B * geo.T, (long)val_batch_seqs * cfg.train_seq_len, cfg.eval_batch_seqs * cfg.eval_seq_len});
        ModelGPU m;  // counts the activation arena the way model_gpu_build carves it, without allocating
        m.config = cfg;
        m.tensors = tl;
        m.max_N = (int)std::min<long>(max_N, INT32_MAX);
        m.rope_max_T = (int)std::max(cfg.train_seq_len, cfg.eval_seq_len);
        DeviceArena count;
        model_gpu_carve(m, count);
        // weights fp32 + grads fp32 + bf16 copy, EMA, optimizer state and its bf16 Newton-Schulz scratch
        need = flat * (2 + 0.5 + 1 + 3 + 1.5) + (double)count.used + 1.0 * GiB /*context, cuBLASLt workspaces*/;
        size_t free_b = 0, total_b = 0;
        cudaCheck(cudaMemGetInfo(&free_b, &total_b));
        have = (double)free_b;
        where = "free GPU memory";
#endif
    }
    log.printf("memory: this run needs about %.2f GiB on the %s, %.2f GiB %s\n", need / GiB, cfg.device.c_str(), have / GiB,
               where.c_str());
    if (need > have)
        fatal_config("this config needs about %.1f GiB on the %s but only %.1f GiB is %s. HINT: a smaller model or batch "
                     "(TRAIN_BATCH_TOKENS, TRAIN_SEQ_LEN, NUM_LAYERS, MODEL_DIM, VAL_BATCH_SIZE, EVAL_BATCH_SEQS); the README's "
                     "CPU example: %s",
                     need / GiB, cfg.device.c_str(), have / GiB, where.c_str(),
                     SMALL_CPU_EXAMPLE);
}

// ----------------------------------------------------------------------------
// interrupts: Ctrl-C (SIGINT) or a scheduler's SIGTERM finishes the current step, saves the
// training state and exits 128+signal; a second signal exits at once.

static volatile sig_atomic_t g_stop_signal = 0;

static void on_stop_signal(int sig) {
    if (g_stop_signal) _exit(128 + sig);
    g_stop_signal = sig;
    static const char msg[] = "\ninterrupt: finishing the current step, then saving the training state (again to quit at once)\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
}

static void catch_stop_signals() {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
}

// "1h02m03s" for progress lines
static std::string hms(double s) {
    char b[32];
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(b, sizeof b, "%ldh%02ldm%02lds", t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60) snprintf(b, sizeof b, "%ldm%02lds", t / 60, t % 60);
    else snprintf(b, sizeof b, "%lds", t);
    return b;
}

// ----------------------------------------------------------------------------
// data parallel helpers: eval sums and the weight-sync check

// The sums of every rank's share of an eval (fp64, added in rank order: the same on every rank).
static EvalResult eval_all_ranks(Dist &dist, const EvalResult &mine) {
    double s[3] = {mine.loss_sum, mine.tokens, mine.bytes};
    dist_allreduce_sum(dist, s, 3, "eval sums");
    EvalResult r;
    r.loss_sum = s[0], r.tokens = s[1], r.bytes = s[2];
    return r;
}

// CHECK_SYNC_EVERY (debug): the ranks must hold bit-identical weights, EMA and optimizer state
// (they start equal and apply the same averaged gradients). One 64-bit hash per rank, compared.
static void check_ranks_in_sync(Dist &dist, Trainer &trainer, HostState &hs, long step, Logger &log) {
    trainer.get(hs);
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](const std::vector<float> &v) {
        for (float f : v) {
            uint32_t u;
            memcpy(&u, &f, 4);
            h = (h ^ u) * 1099511628211ull;
        }
    };
    for (const std::vector<float> *v : {&hs.params, &hs.ema, &hs.opt.muon_buf, &hs.opt.adam_m, &hs.opt.adam_v}) mix(*v);
    std::vector<uint64_t> all(dist.world_size);
    dist_allgather(dist, &h, sizeof h, all.data(), "weight-sync check");
    for (int r = 1; r < dist.world_size; r++)
        if (all[r] != all[0])
            fatal("check_sync: after step %ld rank %d's weights/optimizer state differ from rank 0's (hash %016llx vs %016llx)",
                  step, r, (unsigned long long)all[r], (unsigned long long)all[0]);
    log.printf("check_sync: step:%ld %d ranks bit-identical (hash %016llx)\n", step, dist.world_size, (unsigned long long)h);
}

// ----------------------------------------------------------------------------
// the training loop: the reference's loop, step for step, on either device
//
// With several ranks (dist.world_size > 1) every rank runs this same loop on its slice of each
// batch; the trainers average the gradients, so the ranks stay identical. Rank 0's clock is
// the one that counts: it is broadcast before and after every step, so the LR schedule, late
// QAT and the wallclock stop are decided once. Only rank 0 logs and writes files.

// geo: this rank's batch geometry (batch_geometry(cfg, dist.world_size, dist.rank)). resume_ck/
// resume_rc: the state file read and checked by main (empty when not resuming).
static void train(Config &cfg, const BatchGeometry &geo, const TensorList &tl, Logger &log, const ByteLuts &luts,
                  const std::vector<uint16_t> &val_tokens, Checkpoint &resume_ck, const RunCounters &resume_rc, Dist &dist) {
    const int world_size = geo.world_size, rank = geo.rank;
    const bool lead = rank == 0;
    const int val_batch_seqs = geo.val_batch_seqs(cfg, cfg.train_seq_len);
    // the inputs first (every shard header is checked here), then the memory, then the big allocations
    TrainLoader loader;
    loader.init(cfg.data_path, geo.rank, geo.world_size, (int)cfg.vocab_size);  // the cursor is global: same on every rank
    if (!cfg.init_ckpt.empty() && !file_exists(cfg.init_ckpt.c_str()))
        fatal("%s: no such file (INIT_CKPT / --init-ckpt)", cfg.init_ckpt.c_str());
    check_memory(cfg, tl, geo, val_batch_seqs, log);
    std::vector<float> init(tl.flat, 0.f);
    if (!cfg.init_ckpt.empty()) {
        // start from given weights (parity runs, fine-tuning): the model shape must match
        Checkpoint ck;
        checkpoint_read(cfg.init_ckpt.c_str(), ck);
        checkpoint_to_params(ck, tl, init.data(), cfg.init_ckpt.c_str());
        log.printf("init:%s\n", cfg.init_ckpt.c_str());
    } else {
        Params<float> p;
        params_bind(p, cfg, init.data());
        model_init(p, cfg, (uint64_t)cfg.seed);
    }
    std::unique_ptr<Trainer> trainer;
    if (cfg.device == "cpu") {
        trainer.reset(new TrainerCPU(cfg, init, geo, dist));
    } else {
#ifdef NO_CUDA
        fatal_config("this train_gpt was built without CUDA (no nvcc at build time): run with --device cpu, or rebuild with nvcc");
#else
        // (this rank's GPU was selected in main, before the device probe created a context)
#ifdef USE_NCCL
        if (dist.active) {
            dist_nccl_init(dist);
            log.printf("nccl:%d.%d.%d communicator of %d ranks (NCCL_NVLS_ENABLE=%s)\n", NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH,
                       world_size, getenv("NCCL_NVLS_ENABLE"));
        }
#else
        if (world_size > 1)
            fatal_config("this train_gpt was built without NCCL, so it trains on one GPU only (WORLD_SIZE=%d) HINT: install "
                         "NCCL (nccl.h and libnccl under CUDA_HOME) and rebuild", world_size);
#endif
        DeviceInfo dev = device_info();
        log.printf("device:cuda %s (sm_%d%d, %d SMs, %.0f GiB)\n", dev.name, dev.cc_major, dev.cc_minor, dev.sm_count,
                   dev.total_mem / 1073741824.0);
        const long max_N = std::max({(long)geo.B * geo.T, (long)val_batch_seqs * cfg.train_seq_len,
                                     cfg.eval_batch_seqs * cfg.eval_seq_len});
        const long max_T = std::max(cfg.train_seq_len, cfg.eval_seq_len);
        if (max_N > INT32_MAX / std::max(cfg.vocab_size, 1L))
            fatal_config("batches of %ld tokens are too large for one GPU forward (lower TRAIN_BATCH_TOKENS or EVAL_BATCH_SEQS)", max_N);
        trainer.reset(new TrainerGPU(cfg, init, geo, dist, (int)max_N, (int)max_T));
#endif
    }
    log.printf("device:%s world_size:%d grad_accum_steps:%d micro_batch:%dx%d\n", cfg.device.c_str(), world_size, geo.grad_accum,
               geo.B, geo.T);
    if (dist.active) log.printf("dist: %d ranks (%d per node), control plane %s\n", world_size, dist.local_world_size, dist.where.c_str());
    log.printf("XSA:last_%ld  VE:%s  late_qat_threshold:%g  ema_decay:%g%s\n", cfg.xsa_last_n,
               cfg.ve_enabled ? cfg.ve_layers.c_str() : "off", cfg.late_qat_threshold, cfg.ema_decay,
               cfg.ema_warmup ? " ema_warmup:(1+t)/(10+t)" : "");
    log.printf("train_batch_tokens:%ld train_seq_len:%ld iterations:%ld warmup_steps:%ld max_wallclock_seconds:%.3f\n",
               cfg.train_batch_tokens, cfg.train_seq_len, cfg.iterations, cfg.warmup_steps, cfg.max_wallclock_seconds);
    log.printf("seed:%ld\n", cfg.seed);

    const std::string state_path = cfg.out_dir + "/train_state.ckpt";
    HostState hs;

    // Warmup steps, then undo them (weights, optimizer state, data cursor): the reference does this
    // to keep compilation off the clock; here it takes cuBLASLt's algorithm search, the first
    // launches and the caches' warm-up off the clock.
    if (cfg.warmup_steps > 0) {  // also before a resume: the state is loaded after it
        double t_w = now_seconds();
        trainer->get(hs);
        trainer->ema_decay = ema_decay_at(cfg, 0);  // (the EMA is reset after the warmup anyway)
        for (long w = 0; w < cfg.warmup_steps; w++) {
            if (g_stop_signal) {  // nothing trained yet: nothing to save
                log.printf("interrupted (signal %d) during the warmup: nothing trained yet, nothing saved\n", (int)g_stop_signal);
                exit(128 + g_stop_signal);
            }
            trainer->step(loader, 1.0, muon_momentum_at(cfg, 0), QAT_OFF);
            if (cfg.warmup_steps <= 20 || (w + 1) % 10 == 0 || w + 1 == cfg.warmup_steps)
                log.printf("warmup_step:%ld/%ld\n", w + 1, cfg.warmup_steps);
        }
        trainer->set(hs);
        loader.seek(0, 0);
        log.printf("warmup: %ld steps in %.1fs, undone (weights, optimizer, data cursor; off the training clock)\n",
                   cfg.warmup_steps, now_seconds() - t_w);
    }
    trainer->ema_reset();
    NllFn nll = trainer->nll();
    const bool profiling = cfg.profile && trainer->can_profile();
    if (cfg.profile && !profiling) log.printf("profile: PROFILE is GPU only; the CPU path has no profiler, so it is ignored\n");
    double wall_ms[2] = {0, 0};  // PROFILE: host wall time of the plain [0] and profiled [1] steps
    long wall_n[2] = {0, 0};
    double peak_mem = 0;         // device bytes in use, the most report_memory saw

    const RunCounters rc = resume_rc;
    if (!cfg.resume.empty()) {
        load_train_state(cfg.resume, resume_ck, tl, hs);
        resume_ck = Checkpoint();  // its memory back
        trainer->set(hs);
        loader.seek((int)rc.file_idx, rc.pos);
        log.printf("resume:%s step:%ld train_time:%.0fms\n", cfg.resume.c_str(), rc.step, rc.training_ms);
    }
    QatMode qat = rc.qat ? QAT_INT6 : QAT_OFF;
    double training_ms = rc.training_ms, t0 = now_seconds();
    long stop_after = -1;
    // the clock stops while the state is written (it is not training time)
    auto save_state = [&](long done) {
        if (!lead) return;
        double t_save = now_seconds();
        RunCounters now{done, loader.file_idx(), loader.pos(), (int)qat, training_ms + 1000.0 * (t_save - t0)};
        trainer->get(hs);
        save_train_state(state_path, cfg, tl, hs, now);
        log.printf("saved training state: step %ld to %s (%.1f s)\n", done, state_path.c_str(), now_seconds() - t_save);
        t0 += now_seconds() - t_save;
    };
    const double t_loop = now_seconds();
    double last_line = t_loop;  // wall time of the last step line (TRAIN_LOG_SECONDS)
    long end_step = rc.step;
    for (long step = rc.step;; step++) {
        end_step = step;
        bool last = step >= cfg.iterations || (stop_after >= 0 && step >= stop_after);
        if (!cfg.train_only && (last || (cfg.val_loss_every > 0 && step % cfg.val_loss_every == 0))) {
            training_ms += 1000.0 * (now_seconds() - t0);
            EvalResult r = eval_all_ranks(dist, eval_standard(val_tokens, (int)cfg.train_seq_len, val_batch_seqs, luts, nll, rank, world_size));
            log.printf("step:%ld/%ld val_loss:%.4f val_bpb:%.4f train_time:%.0fms step_avg:%.2fms\n", step, cfg.iterations,
                       r.val_loss(), r.val_bpb(), training_ms, training_ms / std::max(step, 1L));
            t0 = now_seconds();
        }
        if (last) {
            if (stop_after >= 0 && step < cfg.iterations)
                log.printf("stopping_early: wallclock_cap train_time:%.0fms step:%ld/%ld\n", training_ms, step, cfg.iterations);
            break;
        }
        const double elapsed_ms = dist_from_rank0(dist, training_ms + 1000.0 * (now_seconds() - t0), "training clock");
        double lr_mult = lr_multiplier(cfg, step, elapsed_ms);
        if (cfg.late_qat_threshold > 0 && lr_mult < cfg.late_qat_threshold && qat == QAT_OFF) {
            qat = QAT_INT6;
            log.printf("late_qat:enabled step:%ld scale:%.4f\n", step, lr_mult);
        }
        const long file_idx = loader.file_idx(), pos = loader.pos();
        trainer->ema_decay = ema_decay_at(cfg, step);
        // PROFILE: every other step from the second on is profiled, the ones between run plain
        // (the first timed step is neither: it still carries first-time costs)
        const long nth = step - rc.step;
        trainer->profile_next = profiling && nth % 2 == 1;
        const double t_step = now_seconds();
        StepResult res = trainer->step(loader, lr_mult, muon_momentum_at(cfg, step), qat);
        if (profiling && nth > 0) {
            wall_ms[nth % 2] += 1000.0 * (now_seconds() - t_step);
            wall_n[nth % 2]++;
        }
        if (!res.finite) {
            // the update was not applied: save the last good state, with the cursor before this step
            loader.seek((int)file_idx, pos);
            save_state(step);
            dist_barrier(dist, "saving the last good state");  // nobody exits (and stops rank 0) before it is written
            fatal("training diverged at step %ld: train loss %g, gradient norm %g; the last good state (after step %ld) is in %s "
                  "(HINT: lower the learning rates or check the data, then --resume from it)",
                  step + 1, res.loss, res.grad_norm, step, state_path.c_str());
        }
        const long done = step + 1;
        const double approx_ms = dist_from_rank0(dist, training_ms + 1000.0 * (now_seconds() - t0), "training clock");
        const bool by_time = cfg.train_log_seconds > 0 && now_seconds() - last_line >= cfg.train_log_seconds;
        if (by_time || (cfg.train_log_every > 0 && (done <= 10 || done % cfg.train_log_every == 0 || stop_after >= 0))) {
            // ETA: the remaining steps at this run's pace, or the wallclock cap if that comes first
            const double pace_s = (now_seconds() - t_loop) / (double)(done - rc.step);
            double eta_s = pace_s * (double)(cfg.iterations - done);
            if (cfg.max_wallclock_seconds > 0) eta_s = std::min(eta_s, std::max(cfg.max_wallclock_seconds - approx_ms / 1000.0, 0.0));
            log.printf("step:%ld/%ld train_loss:%.4f train_time:%.0fms step_avg:%.2fms tok/s:%.0f elapsed:%s eta:%s\n", done,
                       cfg.iterations, res.loss, approx_ms, approx_ms / done,
                       cfg.train_batch_tokens * (double)(done - rc.step) / std::max((approx_ms - rc.training_ms) / 1000.0, 1e-9),
                       hms(now_seconds() - t_loop).c_str(), hms(eta_s).c_str());
            last_line = now_seconds();
        }
        if (done == rc.step + 1) peak_mem = std::max(peak_mem, trainer->report_memory(log));
        if (cfg.check_sync_every > 0 && done % cfg.check_sync_every == 0) check_ranks_in_sync(dist, *trainer, hs, done, log);
        if (stop_after < 0 && cfg.max_wallclock_seconds > 0 && approx_ms >= 1000.0 * cfg.max_wallclock_seconds) stop_after = done;
        const bool interrupt = cfg.stop_step > 0 && done == cfg.stop_step;
        // read once (a signal may arrive while we save), and rank 0's: every rank stops after the same step
        const int sig = dist_from_rank0(dist, (int)g_stop_signal, "stop signal");
        if ((cfg.save_every > 0 && (done % cfg.save_every == 0 || done == cfg.iterations || stop_after >= 0)) || interrupt || sig)
            save_state(done);
        if (sig) {
            log.printf("interrupted by %s after step %ld/%ld: training state saved to %s. Continue with the same options plus "
                       "--resume %s\n",
                       sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal", done, cfg.iterations, state_path.c_str(),
                       state_path.c_str());
            log.close();
            exit(128 + sig);
        }
        if (interrupt) {
            log.printf("stop_step:%ld reached: training state saved to %s (continue with --resume)\n", done, state_path.c_str());
            return;
        }
    }
    peak_mem = std::max(peak_mem, trainer->report_memory(log));
    {
        // the run's speed in the units of dev/bench.sh: tokens/s, model TFLOP/s against the H200's
        // bf16 ceiling (model.h), the device memory in use
        const double run_ms = training_ms + 1000.0 * (now_seconds() - t0) - rc.training_ms;  // (t0 restarts after each eval)
        const long steps = end_step - rc.step;
        if (steps > 0 && run_ms > 0) {
            const double tok_s = (double)cfg.train_batch_tokens * steps / (run_ms / 1000.0);
            const double tflops = tok_s * model_flops_per_token(cfg, cfg.train_seq_len) / 1e12;
            char mem[32] = "-";
            if (peak_mem > 0) snprintf(mem, sizeof mem, "%.2fGiB", peak_mem / 1073741824.0);
            const double ceiling = H200_BF16_TFLOPS * world_size;  // (all ranks together; peak memory is rank 0's)
            log.printf("perf: steps:%ld step_avg:%.2fms tok/s:%.0f model_TFLOP/s:%.2f ceiling:%.1f%% of %.0f flops_per_token:%.0f "
                       "peak_memory:%s%s\n", steps, run_ms / steps, tok_s, tflops, 100.0 * tflops / ceiling,
                       ceiling, model_flops_per_token(cfg, cfg.train_seq_len), mem,
                       profiling ? " (PROFILE: half of these steps carry the profiler's events)" : "");
        }
    }
    if (profiling)
        trainer->report_profile(log, wall_n[1] ? wall_ms[1] / wall_n[1] : 0.0, wall_n[0] ? wall_ms[0] / wall_n[0] : 0.0);
    // the finale is not resumable: from here a signal ends the run at once (after a last save if
    // one came during the final eval)
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    const int sig_end = dist_from_rank0(dist, (int)g_stop_signal, "stop signal");  // rank 0's, as in the loop
    if (sig_end) {
        save_state(end_step);
        log.printf("interrupted after the last step: training state saved to %s; --resume %s runs the finale\n", state_path.c_str(),
                   state_path.c_str());
        log.close();
        exit(128 + sig_end);
    }

    // ---- the finale, as the reference: EMA weights -> eval -> checkpoint -> quantize + zstd ->
    // read the artifact back -> roundtrip eval -> sliding-window eval. Each phase is timed; the
    // evals count against the challenge's separate 600 s eval budget.
    auto print = [&](const char *fmt, auto... a) { log.printf(fmt, a...); };
    double t_phase = now_seconds(), eval_s = 0;
    log.printf("ema:applying EMA weights\n");
    trainer->get(hs);
    // The reference loads the fp32 EMA into the model in each tensor's own dtype: the bf16
    // embedding tables get rounded to bf16 here.
    std::vector<float> weights = hs.ema;
    for (const TensorSpec &s : tl.specs)
        if (s.dtype == DT_BF16)
            for (size_t i = 0; i < s.numel; i++) weights[s.offset + i] = bf16_to_f32(f32_to_bf16(weights[s.offset + i]));
    trainer->set_params(weights);
    double ema_ms = 1000.0 * (now_seconds() - t_phase);
    double ms = 0;
    if (!cfg.train_only) {
        t_phase = now_seconds();
        EvalResult post = eval_all_ranks(dist, eval_standard(val_tokens, (int)cfg.train_seq_len, val_batch_seqs, luts, nll, rank, world_size));
        ms = 1000.0 * (now_seconds() - t_phase);
        eval_s += ms / 1000.0;
        log.printf("DIAGNOSTIC post_ema val_loss:%.4f val_bpb:%.4f eval_time:%.0fms\n", post.val_loss(), post.val_bpb(), ms);
        log.printf("final_float_fixed_exact val_loss:%.8f val_bpb:%.8f\n", post.val_loss(), post.val_bpb());
    }

    std::string ckpt_path = cfg.out_dir + "/final_model.ckpt", ptz_path = cfg.out_dir + "/final_model.ptz";
    double quant_ms = 0;
    if (lead) {  // one writer
        Checkpoint ck;
        checkpoint_from_params(ck, cfg, tl, weights.data());
        checkpoint_write(ckpt_path.c_str(), ck);
        log.printf("Serialized model: %lld bytes (%s)\n", file_size(ckpt_path.c_str()), ckpt_path.c_str());

        log.printf("quantize+zstd: int6/int5/int8 per row, then zstd level %ld ...%s\n", cfg.zstd_level,
                   zstd_level_note(cfg.zstd_level).c_str());
        t_phase = now_seconds();
        CodeFiles code = code_files(find_source_dir(cfg.source_dir), "train_gpt.cu", (int)cfg.zstd_level);
        Artifact art;
        artifact_quantize(ck, (int)cfg.mlp_quant_bits, art, ckpt_path.c_str(), cfg.quant_pct_per_row);
        std::vector<uint8_t> file = artifact_serialize(art, (int)cfg.zstd_level);
        write_file_bytes(ptz_path.c_str(), file.data(), file.size());
        quant_ms = 1000.0 * (now_seconds() - t_phase);
        for (const std::string &line : artifact_report(art, file.size(), code, (int)cfg.zstd_level)) log.printf("%s\n", line.c_str());
    }

    if (cfg.train_only) return;
    // read the artifact back from disk and score what it decompresses to (rank 0 reads the file
    // and sends its bytes to the other ranks, which may be on nodes without that disk)
    std::vector<uint8_t> ptz_bytes;
    if (lead) ptz_bytes = read_file_bytes(ptz_path.c_str());
    uint64_t ptz_size = dist_from_rank0(dist, (uint64_t)ptz_bytes.size(), "artifact size");
    ptz_bytes.resize(ptz_size);
    dist_broadcast(dist, ptz_bytes.data(), ptz_size, "artifact bytes");
    Artifact back;
    std::string perr;
    if (!artifact_parse(ptz_bytes.data(), ptz_bytes.size(), back, &perr)) fatal("%s: %s", ptz_path.c_str(), perr.c_str());
    Checkpoint deq;
    artifact_dequantize(back, deq);
    checkpoint_to_params(deq, tl, weights.data(), ptz_path.c_str());
    trainer->set_params(weights);
    t_phase = now_seconds();
    EvalResult rt = eval_all_ranks(dist, eval_standard(val_tokens, (int)cfg.eval_seq_len, val_batch_seqs, luts, nll, rank, world_size));
    ms = 1000.0 * (now_seconds() - t_phase);
    eval_s += ms / 1000.0;
    print_eval(print, "final_int6_roundtrip", rt, ms);
    if (cfg.eval_stride > 0 && cfg.eval_stride < cfg.eval_seq_len) {
        t_phase = now_seconds();
        EvalResult sw = eval_all_ranks(dist, eval_sliding(val_tokens, (int)cfg.eval_seq_len, (int)cfg.eval_stride,
                                                         (int)cfg.eval_batch_seqs, luts, nll, rank, world_size));
        ms = 1000.0 * (now_seconds() - t_phase);
        eval_s += ms / 1000.0;
        char extra[32];
        snprintf(extra, sizeof extra, " stride:%ld", cfg.eval_stride);
        print_eval(print, "final_int6_sliding_window", sw, ms, extra);
    }
    log.printf("finale: ema_apply:%.0fms quantize+zstd:%.0fms evals:%.1fs (challenge eval budget 600s: %s)\n", ema_ms, quant_ms,
               eval_s, eval_s <= 600 ? "within" : "OVER");
}

// ----------------------------------------------------------------------------
// several ranks: how many to start, and the launcher/rendezvous self-test

// The ranks a plain `./train_gpt` starts on this node: NPROC, or one per visible GPU.
static int ranks_to_launch(const Config &cfg) {
    int gpus = 0;
#ifndef NO_CUDA
    if (cfg.device != "cpu" && cudaGetDeviceCount(&gpus) != cudaSuccess) gpus = 0;  // no GPU: the run says so later
#endif
#ifndef USE_NCCL
    if (cfg.device != "cpu" && cfg.nproc > 1)
        fatal_config("NPROC=%ld: this train_gpt was built without NCCL, so it trains on one GPU HINT: install NCCL (nccl.h and "
                     "libnccl under CUDA_HOME) and rebuild", cfg.nproc);
    if (cfg.device != "cpu" && cfg.nproc == 0 && gpus > 1) {
        fprintf(stderr, "note: %d GPUs visible, but this train_gpt was built without NCCL: training on one\n", gpus);
        gpus = 1;
    }
#endif
    const int n = cfg.nproc > 0 ? (int)cfg.nproc : std::max(gpus, 1);
    if (REF_GRAD_ACCUM % n != 0)
        fatal_config("%d ranks (%s) do not divide %d, so the gradient accumulation %d / ranks would not be whole HINT: use "
                     "--nproc 1, 2, 4 or 8, or narrow the GPUs with CUDA_VISIBLE_DEVICES", n,
                     cfg.nproc > 0 ? "NPROC" : "one per visible GPU", REF_GRAD_ACCUM, REF_GRAD_ACCUM);
    if (cfg.device != "cpu" && gpus > 0 && n > gpus) fatal_config("NPROC=%d but only %d GPUs are visible", n, gpus);
    return n;
}

#ifndef NO_CUDA
// The GPU of this rank: LOCAL_RANK among the node's GPUs, or the only one this process sees
// (srun --gpus-per-task 1 gives each task its own CUDA_VISIBLE_DEVICES). Chosen before anything
// creates a CUDA context, so that no rank leaves one (and its memory) on GPU 0. With no GPU at
// all this does nothing: the device probe then says so (or --device auto falls back to the CPU).
static void select_rank_gpu(const DistEnv &env) {
    int n_gpus = 0;
    if (cudaGetDeviceCount(&n_gpus) != cudaSuccess || n_gpus == 0) {
        (void)cudaGetLastError();
        return;
    }
    if (n_gpus != 1 && env.local_rank >= n_gpus)
        fatal_config("local rank %d has no GPU: %d visible on this node HINT: one rank per GPU (LOCAL_WORLD_SIZE, "
                     "--nproc, CUDA_VISIBLE_DEVICES)", env.local_rank, n_gpus);
    cudaCheck(cudaSetDevice(n_gpus == 1 ? 0 : env.local_rank));
}
#endif

// --dist-selftest (for test/test_dist.sh, no GPU needed): rendezvous, then the collectives must
// give the expected answers, then every rank writes OUT_DIR/dist_rank<R>.txt: its identity and
// its micro-batches of the first ITERATIONS steps in test/loader_dump's format, which the test
// compares with the reference loader's arithmetic. DIST_SELFTEST_HOLD=S then keeps all ranks
// exchanging messages for S seconds (the failure tests kill a rank meanwhile).
static int dist_selftest(const Config &cfg, Dist &dist) {
    const int W = dist.world_size;
    struct Who { int32_t rank, world_size, local_rank, local_world_size; };
    Who me{dist.rank, W, dist.local_rank, dist.local_world_size};
    std::vector<Who> all(W);
    dist_allgather(dist, &me, sizeof me, all.data(), "selftest identities");
    for (int r = 0; r < W; r++)
        if (all[r].rank != r || all[r].world_size != W) fatal("selftest: slot %d holds rank %d of %d", r, all[r].rank, all[r].world_size);
    double sum = dist.rank + 1;
    dist_allreduce_sum(dist, &sum, 1, "selftest all-reduce");
    if (sum != W * (W + 1) / 2.0) fatal("selftest: the sum of rank+1 over %d ranks came out %g", W, sum);
    const uint64_t token = dist_from_rank0(dist, (uint64_t)getpid() * 2654435761u, "selftest broadcast");
    const std::string path = cfg.out_dir + "/dist_rank" + std::to_string(dist.rank) + ".txt";
    FILE *f = fopenCheck(path.c_str(), "w");
    fprintf(f, "rank %d world_size %d local_rank %d local_world_size %d token %llu pid %d\n", dist.rank, W, dist.local_rank,
            dist.local_world_size, (unsigned long long)token, (int)getpid());
    fflush(f);  // (the failure tests read the pid while the ranks hold)
    const BatchGeometry geo = batch_geometry(cfg, W, dist.rank);
    TrainLoader loader;
    loader.init(cfg.data_path, geo.rank, geo.world_size, (int)cfg.vocab_size);
    std::vector<int32_t> x, y;
    for (long i = 0; i < cfg.iterations * geo.grad_accum; i++) {
        loader.next_batch(cfg.train_batch_tokens, geo.grad_accum, x, y);
        for (auto *v : {&x, &y}) {
            fputs(v == &x ? "x" : "y", f);
            for (int32_t t : *v) fprintf(f, " %d", (int)t);
            fputc('\n', f);
        }
        fprintf(f, "cursor %d %ld\n", loader.file_idx(), loader.pos());
    }
    fcloseCheck(f, path.c_str());
    const double hold_until = now_seconds() + (double)env_long("DIST_SELFTEST_HOLD", 0);
    while (now_seconds() < hold_until) {
        // a Ctrl-C forwarded by the launcher ends the hold on every rank (rank 0's decides, as in
        // the training loop; catch_stop_signals only sets the flag)
        const int sig = dist_from_rank0(dist, (int)g_stop_signal, "selftest hold");
        if (sig) exit(128 + sig);
        usleep(20 * 1000);
    }
    dist_finalize(dist);
    printf("dist_selftest: %d ranks ok (rank 0's token %llu)\n", W, (unsigned long long)token);
    return 0;
}

int main(int argc, char **argv) {
    Config cfg;
    config_parse(cfg, argc, argv, P_TRAIN, USAGE);
    // Who runs: one rank started by a launcher (ours, torchrun, srun), or a plain process, which
    // starts one rank per GPU itself when there is more than one (common/dist.h).
    const DistEnv env = dist_env_from_environment();
    const int world_size = env.launched ? env.world_size : ranks_to_launch(cfg);
    config_check_batch(cfg, world_size);
    TensorList tl = build_tensor_list(cfg);

    if (cfg.dry_run) {
        config_print_table(cfg, P_TRAIN, [](const char *fmt, auto... a) { printf(fmt, a...); });
        printf("model_params:%zu\n", tl.count);
        printf("flops_per_token:%.0f matmul_weights:%.0f (model FLOPs of a training step, common/model.h)\n",
               model_flops_per_token(cfg, cfg.train_seq_len), model_matmul_weights(cfg));
        return 0;
    }

    // From here a Ctrl-C / SIGTERM is handled (also where the shell started us with it ignored):
    // before the first step it ends the run at the warmup or after step 1, with the state saved.
    catch_stop_signals();
    // Several ranks wanted and none started yet: this process becomes their launcher (it touches
    // no GPU, so it holds no memory on one); every rank runs main again and checks everything.
    if (!env.launched && world_size > 1) {
        require_data(cfg);
        return dist_launch(world_size, argv);
    }
#ifndef NO_CUDA
    if (env.launched && cfg.device != "cpu") select_rank_gpu(env);  // before the probe below creates a context
#endif
    // the device first (is there a GPU at all?), then every input file, then the memory
    const std::string device_notice = config_resolve_device(cfg, "train_gpt");
#ifndef NO_CUDA
    if (cfg.device == "cuda") model_gpu_check_config(cfg);
#endif
    Checkpoint resume_ck;
    RunCounters resume_rc;
    if (!cfg.resume.empty()) {
        resume_rc = read_train_state(cfg.resume, cfg, resume_ck);
        if (resume_rc.step >= cfg.iterations) {
            printf("resume: %s is at step %ld and ITERATIONS=%ld: nothing left to train, so nothing was run. HINT: raise "
                   "ITERATIONS / --iterations to train on; ./eval --checkpoint %s scores its weights\n",
                   cfg.resume.c_str(), resume_rc.step, cfg.iterations, cfg.resume.c_str());
            return 0;
        }
    }
    require_data(cfg);
    make_out_dir(cfg.out_dir);
    Dist dist;
    dist_init(dist, env, cfg.dist_timeout);
    if (cfg.dist_selftest) return dist_selftest(cfg, dist);
    // only rank 0 logs: the other ranks' stdout goes nowhere (errors still reach stderr)
    if (dist.rank != 0 && freopen("/dev/null", "w", stdout) == nullptr) fatal("cannot silence rank %d's stdout", dist.rank);
    Logger log;
    if (dist.rank == 0) log.open(cfg.run_id);
    log.printf("%s\n", log.path.c_str());
    config_print_table(cfg, P_TRAIN, [&](const char *fmt, auto... a) { log.printf(fmt, a...); });
    log.printf("model_params:%zu\n", tl.count);
    log.printf("build:%s\n", BUILD_REV);
    if (!device_notice.empty()) log.printf("%s\n", device_notice.c_str());

    // tokenizer and its byte tables (bits per byte), and the validation tokens
    ByteLuts luts;
    std::vector<uint16_t> val_tokens;
    if (!cfg.train_only) {
        Tokenizer tok;
        tokenizer_load(tok, cfg.tokenizer_path.c_str());
        if ((long)tok.pieces.size() != cfg.vocab_size)
            fatal_config("VOCAB_SIZE=%ld does not match the tokenizer %s (%zu pieces)", cfg.vocab_size, cfg.tokenizer_path.c_str(),
                         tok.pieces.size());
        luts = tokenizer_byte_luts(tok, (int)cfg.vocab_size);
        log.printf("val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=%s\n", cfg.tokenizer_path.c_str());
        long val_seq = std::max(cfg.train_seq_len, cfg.eval_seq_len);
        val_tokens = load_val_tokens(cfg.data_path, (int)val_seq, (int)cfg.vocab_size);
        if (cfg.val_max_tokens > 0 && (long)val_tokens.size() - 1 > cfg.val_max_tokens) {
            long keep = cfg.val_max_tokens / val_seq * val_seq;
            if (keep <= 0) fatal_config("VAL_MAX_TOKENS=%ld is shorter than one sequence of %ld", cfg.val_max_tokens, val_seq);
            val_tokens.resize(keep + 1);
        }
        log.printf("val_loader:shards pattern=%s/fineweb_val_*.bin tokens:%zu\n", cfg.data_path.c_str(), val_tokens.size() - 1);
    } else {
        log.printf("train_only: no tokenizer, no validation, no evals\n");
    }
    std::vector<std::string> train_files = list_shards(cfg.data_path, "fineweb_train_");
    log.printf("train_loader:dataset:%s train_shards:%zu\n", cfg.data_path.c_str(), train_files.size());
    if (file_exists((cfg.data_path + "/NOT_FINEWEB.txt").c_str()))
        log.printf("warning: %s is the offline stand-in dataset (NOT FineWeb): losses are not comparable to the leaderboard\n",
                   cfg.data_path.c_str());
    train(cfg, batch_geometry(cfg, dist.world_size, dist.rank), tl, log, luts, val_tokens, resume_ck, resume_rc, dist);
    dist_finalize(dist);
    log.close();
    return 0;
}
