// checkpoint.h: our checkpoint file (.ckpt): the config, then named tensors, then a CRC.
//
// Byte layout, version 1 (all integers little-endian; str16 = u16 length + UTF-8 bytes):
//
//   "PGCKPT\r\n"                     8-byte magic (the \r\n catches text-mode mangling)
//   u32 version = 1
//   u32 n_config, then n_config x { str16 key, str16 value }   key = env name, e.g. NUM_LAYERS
//   u32 n_tensors, then n_tensors x {
//       str16 name                     the PyTorch state_dict name, e.g. blocks.3.attn.c_q.weight
//       u8    dtype                    0 f32, 1 bf16, 2 f16, 3 i8, 4 i32, 5 i64
//       u8    ndim                     0..4 (0 = scalar)
//       u64   dims[ndim]
//       bytes data                     numel * dtype size, row-major
//   }
//   u32 crc32 of every byte before it (zlib's CRC-32)
//
// The model weights are stored in the reference's dtypes (bf16 embedding tables, f32 for the
// rest), so dev/convert_checkpoint.py moves them to and from a PyTorch state_dict losslessly.
// The same container carries training state later (optimizer moments etc. as extra tensors).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "config.h"
#include "tensors.h"
#include "utils.h"

static const char CKPT_MAGIC[8] = {'P', 'G', 'C', 'K', 'P', 'T', '\r', '\n'};
static const uint32_t CKPT_VERSION = 1;

struct CkptTensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;  // numel * dtype_size bytes
};
// nd little-endian u64 dimensions from r into shape, their product into numel. Returns "" or why
// not: "truncated" (the bytes end) or "absurd" (a dimension or the product above 2^40, so sizes
// cannot overflow). Shared by the .ckpt and .ptz parsers.
inline const char *read_dims(ByteReader &r, unsigned nd, std::vector<int64_t> &shape, uint64_t &numel) {
    numel = 1;
    for (unsigned d = 0; d < nd; d++) {
        uint64_t dim;
        if (!r.u64(dim)) return "truncated";
        if (dim > (1ull << 40) || (dim && numel > (1ull << 40) / dim)) return "absurd";
        numel *= dim;
        shape.push_back((int64_t)dim);
    }
    return "";
}

// Element i of a float tensor (f32, bf16 or f16; 0 for the others) as fp32, exact.
inline float ckpt_float_at(const CkptTensor &t, size_t i) {
    switch (t.dtype) {
    case DT_F32: return get_f32le(&t.data[4 * i]);
    case DT_BF16: return bf16_to_f32(get_u16le(&t.data[2 * i]));
    case DT_F16: return f16_to_f32(get_u16le(&t.data[2 * i]));
    default: return 0.f;
    }
}
struct Checkpoint {
    std::vector<std::pair<std::string, std::string>> config;  // key, value (in file order): ConfigEntries
    std::vector<CkptTensor> tensors;
    const std::string *get(const std::string &key) const {
        for (auto &kv : config) if (kv.first == key) return &kv.second;
        return nullptr;
    }
    const CkptTensor *find(const std::string &name) const {
        for (auto &t : tensors) if (t.name == name) return &t;
        return nullptr;
    }
};

// The two pieces our file formats share (the .ckpt here, the .ptz body in quant.h): the config
// section (u32 count, then str16 key / str16 value pairs) and the CRC-32 trailer.
using ConfigEntries = std::vector<std::pair<std::string, std::string>>;
inline void config_entries_write(ByteWriter &w, const ConfigEntries &cfg) {
    w.u32((uint32_t)cfg.size());
    for (auto &kv : cfg) { w.str16(kv.first); w.str16(kv.second); }
}
inline bool config_entries_read(ByteReader &r, ConfigEntries &cfg, std::string *err) {
    uint32_t count;
    if (!r.u32(count)) { *err = "truncated (config count)"; return false; }
    if (count > 10000) { *err = "absurd config entry count"; return false; }
    for (uint32_t i = 0; i < count; i++) {
        std::string k, v;
        if (!r.str16(k) || !r.str16(v)) { *err = "truncated (config entries)"; return false; }
        cfg.emplace_back(std::move(k), std::move(v));
    }
    return true;
}
// True when the last 4 bytes of p[0..n) are the CRC-32 of the bytes before them (n >= 4).
inline bool crc32_trailer_ok(const uint8_t *p, size_t n) {
    uint32_t stored = get_u32le(p + n - 4);
    return crc32(p, n - 4) == stored;
}

inline std::vector<uint8_t> checkpoint_serialize(const Checkpoint &ck) {
    ByteWriter w;
    w.bytes(CKPT_MAGIC, 8);
    w.u32(CKPT_VERSION);
    config_entries_write(w, ck.config);
    w.u32((uint32_t)ck.tensors.size());
    for (auto &t : ck.tensors) {
        check_internal(t.data.size() == shape_numel(t.shape) * dtype_size(t.dtype));
        w.str16(t.name);
        w.u8(t.dtype);
        w.u8((uint8_t)t.shape.size());
        for (int64_t d : t.shape) w.u64((uint64_t)d);
        w.bytes(t.data.data(), t.data.size());
    }
    w.u32(crc32(w.buf.data(), w.buf.size()));
    return std::move(w.buf);
}

// Parse a checkpoint from memory. Returns false with a message (no file name: the caller adds
// it) on anything malformed; never reads out of bounds. Separate from the file reader so the
// fuzzer can drive it.
inline bool checkpoint_parse(const uint8_t *p, size_t n, Checkpoint &ck, std::string *err) {
    char buf[256];
    auto fail = [&](const char *msg) { if (err) *err = msg; return false; };
    ck = Checkpoint();
    if (n < 8 || memcmp(p, CKPT_MAGIC, 8) != 0) return fail("not a checkpoint (bad magic; expected a .ckpt written by train_gpt or dev/convert_checkpoint.py)");
    if (n < 8 + 4 + 4) return fail("truncated (header)");
    // The version check comes before the CRC so a newer file says "version", not "corrupt".
    uint32_t version = get_u32le(p + 8);
    if (version != CKPT_VERSION) {
        snprintf(buf, sizeof buf, "unsupported checkpoint version %u (this build reads version %u)", version, CKPT_VERSION);
        return fail(buf);
    }
    // the CRC before the fields: on a corrupt file it gives the clearest message
    if (!crc32_trailer_ok(p, n)) return fail("checksum mismatch: the file is truncated or corrupt");
    // From here the bytes are what the writer wrote, but we still bounds-check every field.
    ByteReader r{p, n - 4, 12};  // the body between the version and the crc
    std::string msg;
    if (!config_entries_read(r, ck.config, &msg)) return fail(msg.c_str());
    uint32_t nt;
    if (!r.u32(nt)) return fail("truncated (tensor count)");
    if (nt > 100000) return fail("absurd tensor count");
    for (uint32_t i = 0; i < nt; i++) {
        CkptTensor t;
        if (!r.str16(t.name)) return fail("truncated (tensor name)");
        if (t.name.empty()) return fail("empty tensor name");
        uint8_t dt, nd;
        if (!r.u8(dt) || !r.u8(nd)) return fail("truncated (tensor header)");
        if (dt > DT_I64) { snprintf(buf, sizeof buf, "tensor %s: unknown dtype code %u", t.name.c_str(), dt); return fail(buf); }
        if (nd > 4) { snprintf(buf, sizeof buf, "tensor %s: %u dimensions (at most 4)", t.name.c_str(), nd); return fail(buf); }
        t.dtype = (DType)dt;
        uint64_t numel = 1;
        const char *bad = read_dims(r, nd, t.shape, numel);
        if (!strcmp(bad, "truncated")) return fail("truncated (tensor shape)");
        if (*bad) { snprintf(buf, sizeof buf, "tensor %s: absurd shape", t.name.c_str()); return fail(buf); }
        uint64_t nbytes = numel * dtype_size(t.dtype);
        if (!r.need(nbytes)) { snprintf(buf, sizeof buf, "tensor %s: data runs past the end of the file", t.name.c_str()); return fail(buf); }
        t.data.assign(p + r.pos, p + r.pos + nbytes);
        r.pos += nbytes;
        if (ck.find(t.name)) { snprintf(buf, sizeof buf, "tensor %s appears twice", t.name.c_str()); return fail(buf); }
        ck.tensors.push_back(std::move(t));
    }
    if (r.pos != r.n) return fail("unexpected bytes after the last tensor");
    return true;
}

inline void checkpoint_read(const char *path, Checkpoint &ck) {
    std::vector<uint8_t> bytes = read_file_bytes(path);
    std::string err;
    if (!checkpoint_parse(bytes.data(), bytes.size(), ck, &err)) fatal("%s: %s", path, err.c_str());
}

inline void checkpoint_write(const char *path, const Checkpoint &ck) {
    std::vector<uint8_t> bytes = checkpoint_serialize(ck);
    write_file_bytes(path, bytes.data(), bytes.size());
}

// ----------------------------------------------------------------------------
// model <-> checkpoint

// Every option of the table goes into the checkpoint, so a reader can rebuild the model.
inline void checkpoint_set_config(Checkpoint &ck, const Config &c) {
    ck.config.clear();
    ck.config.emplace_back("PRESET", c.preset);
    for (int i = 0; i < NUM_OPTIONS; i++)
        if (OPTIONS[i].env[0]) ck.config.emplace_back(OPTIONS[i].env, config_get(c, i));
}

// The options that define the model's shape and forward pass (P_MODEL in the option table): a
// checkpoint's values for these override whatever the user configured (eval and quantize read
// the model from the file).
inline bool model_option(int i) { return (OPTIONS[i].programs & P_MODEL) != 0; }

inline void config_from_checkpoint(Config &c, const Checkpoint &ck, const char *path) {
    for (int i = 0; i < NUM_OPTIONS; i++) {
        if (!model_option(i)) continue;
        const std::string *v = ck.get(OPTIONS[i].env);
        if (!v) continue;  // older/converted files may lack some keys: keep the configured value
        config_set(c, i, v->c_str(), path);
    }
    config_error_origin() = path;
    config_derive(c);
    config_error_origin().clear();
}

// Store fp32 parameters as a checkpoint, each tensor converted to its reference dtype.
inline void checkpoint_from_params(Checkpoint &ck, const Config &c, const TensorList &tl, const float *params) {
    checkpoint_set_config(ck, c);
    ck.tensors.clear();
    for (const TensorSpec &s : tl.specs) {
        CkptTensor t{s.name, s.dtype, s.shape, {}};
        t.data.resize(s.numel * dtype_size(s.dtype));
        const float *src = params + s.offset;
        for (size_t i = 0; i < s.numel; i++) {
            if (s.dtype == DT_F32) put_f32le(&t.data[4 * i], src[i]);
            else put_u16le(&t.data[2 * i], s.dtype == DT_BF16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]));
        }
        ck.tensors.push_back(std::move(t));
    }
}

// Load a checkpoint's tensors into fp32 parameters. The names and shapes must be exactly the
// tensor list's; anything missing, extra, or of another shape is an error naming the file.
inline void checkpoint_to_params(const Checkpoint &ck, const TensorList &tl, float *params, const char *path) {
    for (const TensorSpec &s : tl.specs) {
        const CkptTensor *t = ck.find(s.name);
        if (!t) fatal("%s: tensor %s is missing", path, s.name.c_str());
        if (t->shape != s.shape) {
            std::string want, got;
            for (int64_t d : s.shape) want += std::to_string(d) + ",";
            for (int64_t d : t->shape) got += std::to_string(d) + ",";
            fatal("%s: tensor %s has shape (%s) but the config needs (%s)", path, s.name.c_str(), got.c_str(), want.c_str());
        }
        if (s.numel > 0 && t->dtype != DT_F32 && t->dtype != DT_BF16 && t->dtype != DT_F16)
            fatal("%s: tensor %s has dtype %s; model weights must be f32, bf16 or f16", path, s.name.c_str(), dtype_name(t->dtype));
        float *dst = params + s.offset;
        for (size_t i = 0; i < s.numel; i++) dst[i] = ckpt_float_at(*t, i);
    }
    for (const CkptTensor &t : ck.tensors)
        if (tl.find(t.name) < 0 && t.name.find('/') == std::string::npos)  // '/' marks training-state extras
            fatal("%s: unexpected tensor %s (not part of this model config)", path, t.name.c_str());
}
