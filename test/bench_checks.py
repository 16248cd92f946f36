"""bench_checks.py: the CPU-checkable parts of the issue [F] benchmark (test/test_bench.sh).

  python3 test/bench_checks.py flops TRAIN_GPT     model.h's FLOP formula (./train_gpt --dry-run)
                                                   = dev/yardstick.py's = a count from the built
                                                   PyTorch model's tensors, seed and record presets
  python3 test/bench_checks.py families            kernel names -> PROFILE families; a chrome
                                                   trace -> kernel times -> breakdown lines
  python3 test/bench_checks.py compiled          the yardstick's fullgraph compile and its fallback
                                                   (torch.compile faked: a failing fullgraph trace)
  python3 test/bench_checks.py table DIR           dev/bench_table.py on made-up logs: the numbers,
                                                   ratios and PASS/MISS it must print; missing logs
                                                   give n/a and exit 1
  python3 test/bench_checks.py ncu DIR             dev/ncu_table.py on a made-up ncu CSV
Each prints what it checked and exits non-zero (with the reason) on the first failure.
"""
import contextlib
import io
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "dev"))
sys.path.insert(0, os.path.join(ROOT, "dev", "ref"))
import torch  # noqa: E402
import bench_table as BT  # noqa: E402
import config as C  # noqa: E402
import model as M  # noqa: E402
import yardstick as Y  # noqa: E402


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def cmd_flops(train_gpt):
    for preset, extra in (("seed", {}), ("record", {}), ("seed", {"NUM_LAYERS": "3", "MODEL_DIM": "96", "NUM_HEADS": "6",
                                                                    "NUM_KV_HEADS": "2", "MLP_MULT": "2.5",
                                                                    "TRAIN_SEQ_LEN": "256", "TRAIN_BATCH_TOKENS": "4096"})):
        env = dict(os.environ, **extra)
        out = subprocess.run([train_gpt, "--dry-run", "--preset", preset], env=env, capture_output=True, text=True)
        m = re.search(r"flops_per_token:(\d+) matmul_weights:(\d+)", out.stdout)
        if out.returncode != 0 or not m:
            fail(f"--dry-run --preset {preset}: no flops_per_token line (exit {out.returncode}): {out.stderr[-300:]}")
        cfg = C.full_config(preset, extra)
        T = C.get(cfg, "TRAIN_SEQ_LEN")
        counted = Y.matmul_weights_from_model(M.GPT(cfg, init=False))
        # the tensor list's matrices: every 2-D Linear weight (the Muon group) and the tied head
        listed = sum(int(torch_prod(shape)) for name, shape, _ in M.expected_tensors(cfg)
                     if name.endswith(".weight") and "embed" not in name and name != "tok_emb.weight") + \
            M.dims(cfg)["V"] * M.dims(cfg)["D"]
        d = M.dims(cfg)
        want = 6 * counted + 6 * d["L"] * d["D"] * (T + 1)
        got_cpp, mw_cpp = int(m.group(1)), int(m.group(2))
        if not (mw_cpp == counted == listed == Y.matmul_weights(cfg)):
            fail(f"{preset} {extra}: matmul weights C++ {mw_cpp}, model {counted}, tensor list {listed}, "
                 f"yardstick {Y.matmul_weights(cfg)}")
        if not (got_cpp == want == Y.flops_per_token(cfg, T)):
            fail(f"{preset} {extra}: flops/token C++ {got_cpp}, expected {want}, yardstick {Y.flops_per_token(cfg, T)}")
        print(f"ok: {preset} {extra or ''}: {got_cpp} FLOPs/token ({counted} matmul weights, T={T})")
    # the seed preset's figure by hand: 11 blocks of (2*512^2 + 2*256*512 + 2*1536*512), bigram
    # 512*128, head 1024*512; attention 6*11*512*2049
    hand = 6 * (11 * (2 * 512 * 512 + 2 * 256 * 512 + 2 * 1536 * 512) + 512 * 128 + 1024 * 512) + 6 * 11 * 512 * 2049
    if Y.flops_per_token(C.full_config("seed"), 2048) != hand:
        fail(f"seed preset: {Y.flops_per_token(C.full_config('seed'), 2048)} != {hand} by hand")
    print(f"ok: seed preset {hand} FLOPs/token by hand")


def torch_prod(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def cmd_families():
    cases = {
        # torch's FlashAttention-2 and memory-efficient SDPA, cuDNN's SDPA (forward, backward)
        "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4>, true>": "attention fwd",
        "void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<...>": "attention bwd",
        "void pytorch_flash::flash_bwd_dot_do_o_kernel<true, ...>": "attention bwd",
        "void pytorch_flash::flash_bwd_convert_dq_kernel<...>": "attention bwd",
        "fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<...>)": "attention fwd",
        "fmha_cutlassB_bf16_aligned_64x64_k64_sm80(PyTorchMemEffAttention::AttentionBackwardKernel<...>)": "attention bwd",
        "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64_4x1x1_cga1x1x1_kernel0_0": "attention fwd",
        "cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_3_64x64x64_4x1x1_kernel0_0": "attention bwd",
        # cuBLAS / CUTLASS GEMMs
        "nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNN": "GEMMs (cuBLASLt)",
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1": "GEMMs (cuBLASLt)",
        "void cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_64x4_tn_align8>": "GEMMs (cuBLASLt)",
        # Triton (inductor), even when its name lists attention ops; eager elementwise; copies
        "triton_red_fused__scaled_dot_product_flash_attention_backward_sum_7": "memory-bound layers",
        "triton_poi_fused__to_copy_add_mul_rms_norm_3": "memory-bound layers",
        "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, ...>": "memory-bound layers",
        "Memcpy HtoD (Pinned -> Device)": "memory-bound layers",
    }
    for name, want in cases.items():
        got = Y.family_of(name)
        if got != want:
            fail(f"family_of({name!r}) = {got!r}, want {want!r}")
    print(f"ok: {len(cases)} kernel names -> families")
    if set(Y.FAMILIES) != set(BT.FAMILIES[:-1]) or Y.FAMILIES != BT.FAMILIES[:-1]:
        fail("dev/yardstick.py and dev/bench_table.py list different families")
    # the families are ./train_gpt's (common/cuda_utils.cuh prof_family_name), in its order
    src = open(os.path.join(ROOT, "common", "cuda_utils.cuh")).read()
    m = re.search(r"static const char \*names\[PROF_FAMILIES\] = \{(.*?)\};", src, re.S)
    cu = re.findall(r'"([^"]*)"', m.group(1)) if m else []
    if cu != Y.FAMILIES:
        fail(f"cuda_utils.cuh's families {cu} != yardstick's {Y.FAMILIES}")
    print("ok: the yardstick's families are cuda_utils.cuh's, in its order")
    # a chrome trace: kernels, a memcpy, a memset count; CPU ops and annotations do not
    trace = {"traceEvents": [
        {"ph": "X", "cat": "kernel", "name": "pytorch_flash::flash_fwd_kernel", "dur": 1500.0},
        {"ph": "X", "cat": "kernel", "name": "pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel", "dur": 3000.0},
        {"ph": "X", "cat": "kernel", "name": "nvjet_tst_128x256", "dur": 2500.0},
        {"ph": "X", "cat": "kernel", "name": "triton_poi_fused_add_0", "dur": 2000.0},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD", "dur": 500.0},
        {"ph": "X", "cat": "gpu_memset", "name": "Memset", "dur": 500.0},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "dur": 99999.0},
        {"ph": "X", "cat": "gpu_user_annotation", "name": "CompiledFunction", "dur": 99999.0},
        {"ph": "i", "cat": "kernel", "name": "instant", "dur": 99999.0},
    ]}
    path = os.path.join(os.environ.get("TEST_TMP", "/tmp"), "bench_trace.json")
    with open(path, "w") as f:
        json.dump(trace, f)
    k = Y.kernel_times(path)
    if sorted(round(t, 3) for _, t in k) != [0.5, 0.5, 1.5, 2.0, 2.5, 3.0]:
        fail(f"kernel_times: {k}")
    rows = Y.breakdown(k, [("nvjet NS", 4.0), ("triton adam", 1.0)], n_steps=1, step_ms=20.0)
    want = {"attention fwd": 1.5, "attention bwd": 3.0, "GEMMs (cuBLASLt)": 2.5, "memory-bound layers": 3.0,
            "optimizer+weights": 5.0, "gaps": 20.0 - 15.0, "loss (head CE)": 0.0, "communication": 0.0}
    for f, v in want.items():
        if abs(rows[f][0] - v) > 1e-9:
            fail(f"breakdown[{f}] = {rows[f][0]}, want {v}")
    lines = Y.format_profile(rows, 8)
    parsed = BT.profile_rows("\n".join(lines), "yardstick_profile")
    if abs(parsed["optimizer+weights"][0] - 5.0) > 1e-9 or abs(parsed["total GPU time"][0] - 20.0) > 1e-9 or \
            abs(parsed["attention bwd"][1] - 3.0 / 8) > 1e-3:
        fail(f"format_profile -> profile_rows: {parsed}")
    print("ok: chrome trace -> kernel times -> breakdown -> lines -> bench_table's parser")


def cmd_compiled():
    import types
    calls = []

    def fake_compile(fn, fullgraph=False, dynamic=None):
        calls.append(fullgraph)
        if fullgraph:
            def broken(*a):
                raise RuntimeError("Unsupported: a graph break\nmore detail")
            return broken
        return lambda *a: ("compiled", fn(*a))

    saved = (getattr(torch, "compile", None), getattr(torch, "_dynamo", None))
    torch.compile, torch._dynamo = fake_compile, types.SimpleNamespace(reset=lambda: calls.append("reset"))
    try:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            c = Y.Compiled(lambda x: x + 1, "the model", True)
            first, second = c(1), c(2)
        if first != ("compiled", 2) or second != ("compiled", 3) or calls != [True, "reset", False]:
            fail(f"fallback: results {first}, {second}, compile calls {calls}")
        if not re.search(r"WARNING fullgraph compile of the model failed \(RuntimeError: Unsupported: a graph break\); "
                         r"compiling with graph breaks", out.getvalue()):
            fail(f"fallback: no warning line: {out.getvalue()!r}")
        calls.clear()
        plain = Y.Compiled(lambda x: x * 2, "eager", False)
        if plain(4) != 8 or calls:
            fail("Compiled(enabled=False) must call the function as is")
    finally:
        torch.compile, torch._dynamo = saved
    print("ok: fullgraph compile falls back to graph breaks with one warning line; disabled = eager")


OURS_PLAIN = """step:20/20 train_loss:5.1234 train_time:14000ms step_avg:700.00ms tok/s:1123474 elapsed:14s eta:0s
gpu_memory: model+activations 14000 MiB, device in use 15800 of 143771 MiB
perf: steps:20 step_avg:500.00ms tok/s:1572864 model_TFLOP/s:359.39 ceiling:45.5% of 790 flops_per_token:228492288 peak_memory:15.43GiB
"""
OURS_PROFILE = """profile: 10 profiled steps of 8 micro-steps (every other timed step; the others ran unprofiled)
profile: attention fwd          ms/step:    40.00 ms/micro:   5.000 share:  8.0% calls/step:   88.0
profile: attention bwd          ms/step:   100.00 ms/micro:  12.500 share: 20.0% calls/step:   88.0
profile: GEMMs (cuBLASLt)       ms/step:   180.00 ms/micro:  22.500 share: 36.0% calls/step:  700.0
profile: memory-bound layers    ms/step:   100.00 ms/micro:  12.500 share: 20.0% calls/step:  900.0
profile: loss (head CE)         ms/step:    20.00 ms/micro:   2.500 share:  4.0% calls/step:    8.0
profile: optimizer+weights      ms/step:    10.00 ms/micro:   1.250 share:  2.0% calls/step:   20.0
profile: communication          ms/step:     0.00 ms/micro:   0.000 share:  0.0% calls/step:    0.0
profile: gaps                   ms/step:    50.00 ms/micro:   6.250 share: 10.0% calls/step:    0.0
profile: total GPU time         ms/step:   500.00 ms/micro:  62.500 share:100.0%
profile_wall: profiled ms/step:505.00 unprofiled ms/step:500.00 (the profiler's events cost +1.0%)
"""
YARD = """yardstick_perf: steps:20 step_avg:750.00ms tok/s:1048576 model_TFLOP/s:239.59 ceiling:30.3% of 790 flops_per_token:228492288 peak_allocated:18.00GiB peak_reserved:20.00GiB device_in_use:21.00GiB
yardstick_profile: attention fwd          ms/step:    70.00 ms/micro:   8.750 share:  9.3% calls/step:   88.0
yardstick_profile: gaps                   ms/step:    10.00 ms/micro:   1.250 share:  1.3% calls/step:    0.0
yardstick_sliding: windows:16384 tokens_scored:1050000 time:15.00s scored_tok/s:70000 val_loss:4.0000 seq:2048 stride:64 batch:32
"""
EVAL = """val_tokens:1048576 eval_seq_len:2048 stride:64
val_loss:4.0000 val_bpb:2.0000 eval_time:900ms
sliding_window stride:64 val_loss:4.0000 val_bpb:2.0000 eval_time:5000ms
"""
ENV = "shape: L:11 D:512 T:2048 tokens_per_step:786432 grad_accum:8\n"


def cmd_table(d):
    os.makedirs(d, exist_ok=True)
    for name, text in (("ours_plain.log", OURS_PLAIN), ("ours_profile.log", OURS_PROFILE), ("yardstick.log", YARD),
                       ("ours_eval.log", EVAL), ("bench.env", ENV)):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    r = BT.parse(d)
    if r["ours"]["step_avg"] != 500.0 or r["yard"]["tok/s"] != 1048576 or r["ours"]["peak"] != 15.43 or \
            r["yard"]["peak"] != 21.0 or r["ours"]["sliding_s"] != 5.0 or r["yard"]["scored"] != 1050000:
        fail(f"parse: {r}")
    lines, complete = BT.table(r)
    text = "\n".join(lines)
    # 1572864 / 1048576 = 1.50x; sliding 210000 / 70000 = 3.00x; attention fwd: 786432 * 11 * 2 *
    # 512 * 2049 FLOPs in 40 ms = 453.8 TFLOP/s (the yardstick's 70 ms: 259.3); bwd 2.5x the
    # FLOPs (the kernel convention: QK^T recomputed) in 100 ms = 453.8
    expect = [r"train tokens/s\s+1572864\s+1048576\s+1\.50x", r"train ms/step\s+500\.00\s+750\.00\s+1\.50x",
              r"sliding scored tokens/s\s+210000\s+70000\s+3\.00x",
              r"attention fwd TFLOP/s\s+454\s+259",
              r"target: training tokens/s >= 1\.4x yardstick\s+1\.50x\s+PASS",
              r"target: peak memory <= 16 GiB\s+15\.43 GiB\s+PASS",
              r"target: sliding eval >= 2x yardstick\s+3\.00x\s+PASS",
              r"target: attention fwd >= 450 TFLOP/s\s+454\s+PASS",
              r"target: attention bwd >= 350 TFLOP/s\s+454\s+PASS",
              r"target: memory-bound <= 14 ms/micro-step\s+12\.50 ms\s+PASS",
              r"attention bwd\s+100\.00\s+12\.500\s+-\s+-"]
    for pat in expect:
        if not re.search(pat, text):
            fail(f"table has no /{pat}/:\n{text}")
    if not complete:
        fail("table: complete logs reported as incomplete")
    # the optional record-script run: its step_avg, ours against it, the yardstick check
    with open(os.path.join(d, "record.log"), "w") as f:
        f.write("step:20/20 train_loss:5.0000 train_time:14400ms step_avg:720.00ms\n")
    text = "\n".join(BT.table(BT.parse(d))[0])
    for pat in (r"record script ms/step \(optional\)\s+-\s+720\.00\s+1\.44x",
                r"check: yardstick at least as fast as the record script: 750\.00 vs 720\.00 ms/step  MISS"):
        if not re.search(pat, text):
            fail(f"table has no /{pat}/:\n{text}")
    os.unlink(os.path.join(d, "record.log"))
    # slower: the targets must MISS
    with open(os.path.join(d, "ours_plain.log"), "w") as f:
        f.write(OURS_PLAIN.replace("tok/s:1572864", "tok/s:1300000").replace("peak_memory:15.43GiB", "peak_memory:16.50GiB"))
    text = "\n".join(BT.table(BT.parse(d))[0])
    for pat in (r"1\.4x yardstick\s+1\.24x\s+MISS", r"16 GiB\s+16\.50 GiB\s+MISS"):
        if not re.search(pat, text):
            fail(f"table has no /{pat}/:\n{text}")
    # a missing log: its cells "-", its targets n/a, exit status 1
    os.unlink(os.path.join(d, "yardstick.log"))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "bench_table.py"), d], capture_output=True, text=True)
    if out.returncode != 1 or not re.search(r"1\.4x yardstick\s+-\s+n/a", out.stdout) or "missing" not in out.stdout:
        fail(f"missing yardstick log: exit {out.returncode}\n{out.stdout}")
    print("ok: bench_table parses the logs, computes ratios and attention TFLOP/s, PASS/MISS/n/a")


def cmd_ncu(d):
    """dev/ncu_table.py on a made-up ncu CSV (ncu's own column layout, its unit names and
    thousands separators): the per-kernel rows, the families and their sums; an unknown unit and
    a file that is no ncu CSV are refused in one line."""
    os.makedirs(d, exist_ok=True)
    head = ['"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size",'
            '"Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"']

    def row(i, name, grid, metric, unit, value):
        return f'"{i}","1","dev_model","h","{name}","1","7","(256, 1, 1)","{grid}","0","9.0","m","{metric}","{unit}","{value}"'
    kernels = [  # name, grid, ns, bytes read, bytes written
        ("void attn::attention_backward_sm90_kernel<8>(CUtensorMap, float *)", "(16, 4, 48)", "1,400,000", "500,000,000", "300,000,000"),
        ("attn::attention_backward_preprocess_kernel(float *, float *)", "(24576, 1, 1)", "100,000", "200,000,000", "150,000,000"),
        ("nvjet_sm90_tst_128x160_64x5_2x1_v_bz_NNT", "(2, 66, 1)", "200,000", "300,000,000", "100,000,000"),
        ("void rmsnorm_backward_kernel<4>(bf16 *, const bf16 *)", "(12288, 1, 1)", "100,000", "250,000,000", "100,000,000"),
        ("void rmsnorm_backward_kernel<4>(bf16 *, const bf16 *)", "(12288, 1, 1)", "100,000", "250,000,000", "100,000,000"),
        ("void attn::attention_forward_sm90_ws_kernel<true, 128>(float *)", "(8, 48, 11)", "550,000", "0", "0"),
    ]
    lines = list(head)
    for i, (n, g, t, r, w) in enumerate(kernels):
        lines += [row(i, n, g, "gpu__time_duration.sum", "ns", t), row(i, n, g, "dram__bytes_read.sum", "byte", r),
                  row(i, n, g, "dram__bytes_write.sum", "byte", w)]
    path = os.path.join(d, "ncu.csv")
    with open(path, "w") as f:
        f.write("==PROF== Connected to process\n" + "\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "ncu_table.py"), path], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"ncu_table exit {out.returncode}: {out.stderr}")
    want = [r"^6 kernels, 2\.450 ms of kernel time",
            r"^void rmsnorm_backward_kernel +\(12288, 1, 1\) +2 +0\.200 +100\.0 +0\.70 +3\.50 ",
            r"^attention bwd +2 +1\.500 +1\.15 +0\.77$", r"^attention fwd +1 +0\.550 +0\.00 +0\.00$",
            r"^GEMMs +1 +0\.200 +0\.40 +2\.00$", r"^memory-bound +2 +0\.200 +0\.70 +3\.50$"]
    for w in want:
        if not re.search(w, out.stdout, re.M):
            fail(f"ncu_table: no line matching {w!r} in\n{out.stdout}")
    with open(path, "w") as f:
        f.write("\n".join(head + [row(0, "k", "(1, 1, 1)", "gpu__time_duration.sum", "furlong", "1")]) + "\n")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "ncu_table.py"), path], capture_output=True, text=True)
    if out.returncode == 0 or "unit 'furlong'" not in out.stderr:
        fail(f"ncu_table took an unknown unit: exit {out.returncode} {out.stderr}")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "dev", "ncu_table.py"), os.path.join(ROOT, "README.md")],
                         capture_output=True, text=True)
    if out.returncode == 0 or "no ncu CSV header" not in out.stderr:
        fail(f"ncu_table took a file that is no ncu CSV: exit {out.returncode} {out.stderr}")
    print("ok: ncu_table sums per kernel and per family, refuses unknown units and non-CSV files")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "flops" and len(sys.argv) == 3:
        cmd_flops(sys.argv[2])
    elif cmd == "families":
        cmd_families()
    elif cmd == "compiled":
        cmd_compiled()
    elif cmd == "table" and len(sys.argv) == 3:
        cmd_table(sys.argv[2])
    elif cmd == "ncu" and len(sys.argv) == 3:
        cmd_ncu(sys.argv[2])
    else:
        print(__doc__)
        sys.exit(2)
