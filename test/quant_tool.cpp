// quant_tool: test helper for common/quant.h (build/quant_tool).
//   quant_tool quantize IN.ckpt OUT.ptz [--mlp-bits N] [--level L]
//                                        the export policy on any checkpoint (no model-shape check)
//   quant_tool dump IN.ptz OUT.ckpt      the artifact's codes as a checkpoint, in the layout of
//                                        dev/ref/quant.py --dump (compare the two byte for byte)
//   quant_tool dequantize IN.ptz OUT.ckpt
//   quant_tool load IN.ptz               parse it (every check), print "ok N tensors"
//   quant_tool body IN.ptz OUT.bin       the decompressed body (a fuzz seed for artifact_parse_body)
//   quant_tool seeds DIR                 small artifacts with every scheme: DIR/art_*.ptz, DIR/body_*.bin
//   quant_tool craft KIND OUT.ptz        a well-compressed, checksummed artifact with one defect
//   quant_tool quantiles IN.ckpt OUT.ckpt
//                                        per 2-D f32 tensor NAME: NAME.<i> = torch_quantile of |rows|
//                                        at QUANTILE_PS[i] (test/quant_quantile.py checks them)
//   quant_tool convert IN.f32 OUT.f16 OUT.bf16
//                                        raw little-endian f32 values -> utils.h's fp16 and bf16
#include <random>

#include "../common/quant.h"

static void dump_codes(const Artifact &art, const char *out) {
    Checkpoint ck;
    ck.config = art.config;
    for (const QTensor &qt : art.tensors) {
        ck.config.emplace_back("scheme." + qt.name, qscheme_name(qt.scheme));
        if (qt.scheme == QS_RAW) ck.tensors.push_back({qt.name, qt.dtype, qt.shape, qt.values});
        else if (qt.scheme == QS_FP16) ck.tensors.push_back({qt.name, DT_F16, qt.shape, qt.values});
        else if (qt.scheme == QS_FP32) ck.tensors.push_back({qt.name, DT_F32, qt.shape, qt.values});
        else {
            ck.tensors.push_back({qt.name + ".q", DT_I8, qt.shape, qt.values});
            bool per_row = qt.shape.size() == 2;
            std::vector<int64_t> sshape = per_row ? std::vector<int64_t>{qt.shape[0]} : std::vector<int64_t>{};
            DType sdt = !per_row && qt.scheme == QS_INT8 ? DT_F32 : DT_F16;
            ck.tensors.push_back({qt.name + ".scale", sdt, sshape, qt.scales});
            if (qt.pct != QPCT_NONE) ck.tensors.push_back({qt.name + ".pct", DT_I8, {}, {qt.pct}});
        }
    }
    checkpoint_write(out, ck);
}

// A small float tensor of the given dtype with values N(0, sd) (and a few larger ones).
static CkptTensor small_tensor(const std::string &name, std::vector<int64_t> shape, DType dt, float sd, std::mt19937 &rng) {
    std::normal_distribution<float> nd(0.f, sd);
    CkptTensor t{name, dt, shape, {}};
    size_t n = shape_numel(shape);
    t.data.resize(n * dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        float x = nd(rng) * (i % 17 == 0 ? 8.f : 1.f);
        if (dt == DT_F32) put_f32le(&t.data[4 * i], x);
        else if (dt == DT_BF16) put_u16le(&t.data[2 * i], f32_to_bf16(x));
        else if (dt == DT_F16) put_u16le(&t.data[2 * i], f32_to_f16(x));
        else for (size_t k = 0; k < dtype_size(dt); k++) t.data[i * dtype_size(dt) + k] = (uint8_t)(rng() & 0xFF);
    }
    return t;
}

// Fuzz seeds: every scheme, 2-D and other ranks, on small tensors (forced schemes).
static void write_seeds(const std::string &dir) {
    std::mt19937 rng(7);
    Artifact a;
    a.config = {{"NUM_LAYERS", "2"}, {"MODEL_DIM", "16"}, {"MLP_QUANT_BITS", "5"}};
    a.tensors.push_back(qtensor_quantize(small_tensor("blocks.0.attn.c_q.weight", {8, 16}, DT_F32, 0.5f, rng), QS_INT6));
    a.tensors.push_back(qtensor_quantize(small_tensor("blocks.0.mlp.fc.weight", {6, 16}, DT_F32, 0.1f, rng), QS_INT5));
    a.tensors.push_back(qtensor_quantize(small_tensor("tok_emb.weight", {5, 16}, DT_BF16, 0.3f, rng), QS_INT8));
    a.tensors.push_back(qtensor_quantize(small_tensor("blocks.0.attn.vec", {20}, DT_F32, 1.f, rng), QS_INT6));
    a.tensors.push_back(qtensor_quantize(small_tensor("blocks.0.mlp.cube", {2, 3, 4}, DT_F16, 1.f, rng), QS_INT5));
    a.tensors.push_back(qtensor_quantize(small_tensor("other.vec", {12}, DT_F32, 1.f, rng), QS_INT8));
    a.tensors.push_back(qtensor_quantize(small_tensor("blocks.0.attn_scale", {16}, DT_F32, 1.f, rng), QS_FP16));
    a.tensors.push_back(qtensor_quantize(small_tensor("blocks.0.resid_mix", {2, 16}, DT_F32, 1.f, rng), QS_FP32));
    a.tensors.push_back(qtensor_quantize(small_tensor("bigram.scale", {}, DT_F32, 1.f, rng), QS_FP16));
    a.tensors.push_back(qtensor_quantize(small_tensor("counter", {3}, DT_I64, 1.f, rng), QS_RAW));
    Artifact empty;
    Artifact one;
    one.tensors.push_back(a.tensors[0]);
    const Artifact *arts[] = {&a, &empty, &one};
    for (int i = 0; i < 3; i++) {
        std::vector<uint8_t> body = artifact_body_serialize(*arts[i]);
        std::vector<uint8_t> file = artifact_serialize(*arts[i], 3);
        write_file_bytes((dir + "/body_" + std::to_string(i) + ".bin").c_str(), body.data(), body.size());
        write_file_bytes((dir + "/art_" + std::to_string(i) + ".ptz").c_str(), file.data(), file.size());
    }
}

// Artifacts whose zstd frame and CRC are fine but whose body breaks one rule: the checks past the
// checksums (a buggy writer, or a forged file) must still say what is wrong.
static void craft(const std::string &kind, const char *out) {
    ByteWriter w;
    auto entry = [&](const std::string &name, uint8_t scheme, uint8_t dtype, std::vector<uint64_t> dims, uint8_t pct) {
        w.str16(name); w.u8(scheme); w.u8(dtype); w.u8((uint8_t)dims.size());
        for (uint64_t d : dims) w.u64(d);
        w.u8(pct);
    };
    w.u32(1); w.str16("NUM_LAYERS"); w.str16("2");
    std::vector<uint8_t> payload;
    if (kind == "absurd-shape") { w.u32(1); entry("a.weight", QS_INT8, DT_F32, {1ull << 39, 1ull << 39}, QPCT_NONE); }
    else if (kind == "huge-dims") { w.u32(1); entry("a.weight", QS_FP16, DT_F32, {1ull << 20, 1ull << 20, 1ull << 20}, QPCT_NONE); }
    else if (kind == "too-many-dims") { w.u32(1); entry("a.weight", QS_FP16, DT_F32, {1, 1, 1, 1, 1}, QPCT_NONE); }
    else if (kind == "unknown-scheme") { w.u32(1); entry("a.weight", 9, DT_F32, {2}, QPCT_NONE); payload.resize(4); }
    else if (kind == "unknown-dtype") { w.u32(1); entry("a.weight", QS_FP16, 17, {2}, QPCT_NONE); payload.resize(4); }
    else if (kind == "scheme-dtype") { w.u32(1); entry("a.weight", QS_INT8, DT_I32, {2}, QPCT_NONE); payload.resize(6); }
    else if (kind == "bad-pct") { w.u32(1); entry("a.weight", QS_INT6, DT_F32, {2, 2}, 7); payload.resize(8); }
    else if (kind == "pct-not-int6") { w.u32(1); entry("a.weight", QS_INT8, DT_F32, {2, 2}, 0); payload.resize(8); }
    else if (kind == "short-payload") { w.u32(1); entry("a.weight", QS_FP32, DT_F32, {100}, QPCT_NONE); payload.resize(399); }
    else if (kind == "long-payload") { w.u32(1); entry("a.weight", QS_FP32, DT_F32, {100}, QPCT_NONE); payload.resize(401); }
    else if (kind == "duplicate") { w.u32(2); entry("a", QS_FP16, DT_F32, {1}, QPCT_NONE); entry("a", QS_FP16, DT_F32, {1}, QPCT_NONE); payload.resize(4); }
    else if (kind == "empty-name") { w.u32(1); entry("", QS_FP16, DT_F32, {1}, QPCT_NONE); payload.resize(2); }
    else if (kind == "code-range") { w.u32(1); entry("a.weight", QS_INT5, DT_F32, {1, 2}, QPCT_NONE); payload = {3, 0x14, 0, 0}; }
    else if (kind == "many-tensors") { w.u32(4000000); }
    else if (kind == "crc") { w.u32(1); entry("a.weight", QS_FP16, DT_F32, {2}, QPCT_NONE); payload.resize(4); }
    else fatal_config("craft: unknown kind %s", kind.c_str());
    w.bytes(payload.data(), payload.size());
    w.u32(crc32(w.buf.data(), w.buf.size()) ^ (kind == "crc" ? 1u : 0u));
    ByteWriter f;
    f.bytes(QUANT_MAGIC, 8);
    f.u32(QUANT_VERSION);
    f.u64(w.buf.size());
    std::vector<uint8_t> z = zstd_compress(w.buf, 3);
    f.bytes(z.data(), z.size());
    write_file_bytes(out, f.buf.data(), f.buf.size());
}

// keep in step with PS in test/quant_quantile.py
static const double QUANTILE_PS[] = {0.999, 0.9995, 0.9999, 0.99999, 99.99984 / 100.0, 0.5, 0.25, 0.9, 0.3, 0.7, 0.0, 1.0};

static void quantiles(const char *in, const char *out) {
    Checkpoint ck, res;
    checkpoint_read(in, ck);
    std::vector<float> buf;
    for (const CkptTensor &t : ck.tensors) {
        if (t.shape.size() != 2 || t.dtype != DT_F32) continue;
        size_t rows = (size_t)t.shape[0], cols = (size_t)t.shape[1];
        int k = 0;
        for (double p : QUANTILE_PS) {
            CkptTensor q{t.name + "." + std::to_string(k++), DT_F32, {(int64_t)rows}, std::vector<uint8_t>(4 * rows)};
            for (size_t r = 0; r < rows; r++) {
                std::vector<float> row(cols);
                for (size_t i = 0; i < cols; i++) row[i] = ckpt_float_at(t, r * cols + i);
                quantile_prepare(row.data(), cols, quantile_low_index(cols, p), buf);
                put_f32le(&q.data[4 * r], torch_quantile_sorted(buf.data(), cols, p));
            }
            res.tensors.push_back(std::move(q));
        }
    }
    checkpoint_write(out, res);
}

int main(int argc, char **argv) {
    if (argc < 3) fatal_config("usage: quant_tool quantize|dump|dequantize|load|body|seeds|craft|quantiles|convert ...");
    std::string cmd = argv[1];
    if (cmd == "quantize") {
        if (argc < 4) fatal_config("usage: quant_tool quantize IN.ckpt OUT.ptz [--mlp-bits N] [--level L]");
        int bits = 0, level = 22;
        for (int a = 4; a + 1 < argc; a += 2) {
            if (!strcmp(argv[a], "--mlp-bits")) bits = atoi(argv[a + 1]);
            else if (!strcmp(argv[a], "--level")) level = atoi(argv[a + 1]);
            else fatal_config("unknown option %s", argv[a]);
        }
        Checkpoint ck;
        checkpoint_read(argv[2], ck);
        if (bits == 0) { const std::string *v = ck.get("MLP_QUANT_BITS"); bits = v ? atoi(v->c_str()) : 5; }
        Artifact art;
        artifact_quantize(ck, bits, art, argv[2]);
        artifact_write(argv[3], art, level);
        printf("wrote %s: %zu tensors\n", argv[3], art.tensors.size());
    } else if (cmd == "dump" || cmd == "dequantize" || cmd == "body") {
        if (argc < 4) fatal_config("usage: quant_tool %s IN.ptz OUT", cmd.c_str());
        Artifact art;
        artifact_read(argv[2], art);
        if (cmd == "dump") dump_codes(art, argv[3]);
        else if (cmd == "body") { std::vector<uint8_t> b = artifact_body_serialize(art); write_file_bytes(argv[3], b.data(), b.size()); }
        else { Checkpoint ck; artifact_dequantize(art, ck); checkpoint_write(argv[3], ck); }
    } else if (cmd == "load") {
        Artifact art;
        artifact_read(argv[2], art);
        printf("ok %zu tensors\n", art.tensors.size());
    } else if (cmd == "seeds") {
        write_seeds(argv[2]);
    } else if (cmd == "craft") {
        if (argc < 4) fatal_config("usage: quant_tool craft KIND OUT.ptz");
        craft(argv[2], argv[3]);
    } else if (cmd == "quantiles") {
        if (argc < 4) fatal_config("usage: quant_tool quantiles IN.ckpt OUT.ckpt");
        quantiles(argv[2], argv[3]);
    } else if (cmd == "convert") {
        if (argc < 5) fatal_config("usage: quant_tool convert IN.f32 OUT.f16 OUT.bf16");
        std::vector<uint8_t> in = read_file_bytes(argv[2]);
        size_t n = in.size() / 4;
        std::vector<uint8_t> h(2 * n), b(2 * n);
        for (size_t i = 0; i < n; i++) {
            float x = get_f32le(&in[4 * i]);
            put_u16le(&h[2 * i], f32_to_f16(x));
            put_u16le(&b[2 * i], f32_to_bf16(x));
        }
        write_file_bytes(argv[3], h.data(), h.size());
        write_file_bytes(argv[4], b.data(), b.size());
    } else {
        fatal_config("unknown command %s", cmd.c_str());
    }
    return 0;
}
