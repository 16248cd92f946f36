// tensors.h: the model's parameter list, defined once.
//
// visit_tensors() walks every parameter in the order PyTorch's state_dict() lists them for the
// reference model (a module's own parameters first, then its children), with the state_dict
// name, the shape, the dtype the reference keeps it in, and the optimizer group. Everything else
// derives from it: the parameter count, the offsets into one flat buffer, the pointers of the
// Params struct, the checkpoint order and names, the optimizer groups, the quantization class.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config.h"

// Element types of checkpoint tensors (the numbers are the file format's, see checkpoint.h).
enum DType : uint8_t { DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2, DT_I8 = 3, DT_I32 = 4, DT_I64 = 5 };
inline size_t dtype_size(DType t) {
    switch (t) {
    case DT_F32: case DT_I32: return 4;
    case DT_BF16: case DT_F16: return 2;
    case DT_I8: return 1;
    case DT_I64: return 8;
    }
    return 0;
}
inline const char *dtype_name(DType t) {
    static const char *n[] = {"f32", "bf16", "f16", "i8", "i32", "i64"};
    return t <= DT_I64 ? n[t] : "?";
}

// Optimizer groups of the reference: Muon for 2-D block matrices and the bigram/VE projections,
// AdamW at TIED_EMBED_LR for the embedding tables, AdamW at SCALAR_LR for scalars/control tensors.
enum OptGroup { OPT_MUON, OPT_ADAM_EMBED, OPT_ADAM_SCALAR };

// The reference's _classify_param(name), which picks the quantization of a large tensor.
enum QuantClass { QC_EMBED, QC_MLP, QC_ATTN, QC_OTHER };
inline QuantClass quant_class(const std::string &name) {
    if (name.find("tok_emb") != std::string::npos || name.find("lm_head") != std::string::npos) return QC_EMBED;
    if (name.find(".mlp.") != std::string::npos) return QC_MLP;
    if (name.find(".attn.") != std::string::npos || name.find(".proj.") != std::string::npos) return QC_ATTN;
    return QC_OTHER;
}

// Pointers to each parameter inside one flat buffer. T is float for training and double for the
// gradient checks; the same struct also points into gradient and optimizer-state buffers.
template <typename T>
struct BlockParams {
    T *attn_scale;  // (D)
    T *mlp_scale;   // (D)
    T *resid_mix;   // (2, D): x_in = mix[0]*x + mix[1]*x0
    T *q_gain;      // (H)
    T *c_q;         // (D, D)        rows = output features, as nn.Linear
    T *c_k;         // (KV*hd, D)
    T *c_v;         // (KV*hd, D)
    T *attn_proj;   // (D, D)
    T *fc;          // (hidden, D)
    T *mlp_proj;    // (D, hidden)
};
template <typename T>
struct Params {
    T *skip_weights;   // (n_skip, D)
    T *tok_emb;        // (V, D)   tied: also the output head
    T *bigram_scale;   // ()
    T *bigram_embed;   // (B, bigram_dim)
    T *bigram_proj;    // (D, bigram_dim)
    T *smear_gate;     // (D)
    std::vector<BlockParams<T>> blocks;  // L of them
    T *ve_scale;       // ()                 VE only
    T *ve_embed;       // (V, ve_dim)        VE only
    T *ve_proj;        // (KV*hd, ve_dim)    VE only
    std::vector<T *> ve_layer_scales;    // len(VE_LAYERS) x (1)
};

struct TensorSpec {
    std::string name;            // state_dict name
    std::vector<int64_t> shape;  // empty = a 0-dim scalar
    DType dtype;                 // dtype of the reference's state_dict (bf16 embeddings, f32 the rest)
    OptGroup group;
    size_t numel, offset;        // offset in elements into the flat parameter buffer
};

// THE tensor list. Calls row(name, shape, dtype, group, slot) for every parameter, in state_dict
// order; slot is the address of the pointer for this tensor in `p` (nullptr when p is null).
template <typename T, typename Row>
void visit_tensors(const Config &c, Params<T> *p, Row row) {
    const int64_t D = c.model_dim, V = c.vocab_size, H = c.num_heads, KVD = c.kv_dim, F = c.mlp_hidden;
    if (p) { p->blocks.resize(c.num_layers); p->ve_layer_scales.resize(c.ve_layer_list.size()); }
#define SLOT(field) (p ? &(p->field) : (T **)nullptr)
    row("skip_weights", {(int64_t)c.num_skip, D}, DT_F32, OPT_ADAM_SCALAR, SLOT(skip_weights));
    row("tok_emb.weight", {V, D}, DT_BF16, OPT_ADAM_EMBED, SLOT(tok_emb));
    row("bigram.scale", {}, DT_F32, OPT_ADAM_SCALAR, SLOT(bigram_scale));
    row("bigram.embed.weight", {(int64_t)c.bigram_vocab_size, (int64_t)c.bigram_dim}, DT_BF16, OPT_ADAM_EMBED, SLOT(bigram_embed));
    row("bigram.proj.weight", {D, (int64_t)c.bigram_dim}, DT_F32, OPT_MUON, SLOT(bigram_proj));
    row("smear.gate", {D}, DT_F32, OPT_ADAM_SCALAR, SLOT(smear_gate));
    for (int l = 0; l < c.num_layers; l++) {
        std::string b = "blocks." + std::to_string(l) + ".";
        row(b + "attn_scale", {D}, DT_F32, OPT_ADAM_SCALAR, SLOT(blocks[l].attn_scale));
        row(b + "mlp_scale", {D}, DT_F32, OPT_ADAM_SCALAR, SLOT(blocks[l].mlp_scale));
        row(b + "resid_mix", {2, D}, DT_F32, OPT_ADAM_SCALAR, SLOT(blocks[l].resid_mix));
        row(b + "attn.q_gain", {H}, DT_F32, OPT_ADAM_SCALAR, SLOT(blocks[l].q_gain));
        row(b + "attn.c_q.weight", {D, D}, DT_F32, OPT_MUON, SLOT(blocks[l].c_q));
        row(b + "attn.c_k.weight", {KVD, D}, DT_F32, OPT_MUON, SLOT(blocks[l].c_k));
        row(b + "attn.c_v.weight", {KVD, D}, DT_F32, OPT_MUON, SLOT(blocks[l].c_v));
        row(b + "attn.proj.weight", {D, D}, DT_F32, OPT_MUON, SLOT(blocks[l].attn_proj));
        row(b + "mlp.fc.weight", {F, D}, DT_F32, OPT_MUON, SLOT(blocks[l].fc));
        row(b + "mlp.proj.weight", {D, F}, DT_F32, OPT_MUON, SLOT(blocks[l].mlp_proj));
    }
    if (c.ve_enabled) {
        row("ve_shared.scale", {}, DT_F32, OPT_ADAM_SCALAR, SLOT(ve_scale));
        row("ve_shared.embed.weight", {V, (int64_t)c.ve_dim}, DT_BF16, OPT_ADAM_EMBED, SLOT(ve_embed));
        row("ve_shared.proj.weight", {KVD, (int64_t)c.ve_dim}, DT_F32, OPT_MUON, SLOT(ve_proj));
        for (size_t k = 0; k < c.ve_layer_list.size(); k++)
            row("ve_layer_scales." + std::to_string(k), {1}, DT_F32, OPT_ADAM_SCALAR, SLOT(ve_layer_scales[k]));
    }
#undef SLOT
}

inline size_t shape_numel(const std::vector<int64_t> &shape) {
    size_t n = 1;
    for (int64_t d : shape) n *= (size_t)d;
    return n;
}

// Each tensor starts at a multiple of this many elements in the flat buffers (256 bytes of fp32,
// 128 of bf16): the GPU's vector loads and cuBLASLt's fast kernels want aligned operands, and the
// scalars (bigram.scale, q_gain) would otherwise shift everything after them. The gaps stay zero
// in every buffer (weights, gradients, optimizer state), so sums over the whole buffer (the
// gradient norm) and elementwise passes (EMA) are unaffected.
constexpr size_t TENSOR_ALIGN = 64;
inline size_t tensor_align(size_t off) { return (off + TENSOR_ALIGN - 1) / TENSOR_ALIGN * TENSOR_ALIGN; }

// The list as data: names, shapes, offsets into one flat buffer, and the sizes.
struct TensorList {
    std::vector<TensorSpec> specs;
    size_t count = 0;  // number of parameters (elements) = model_params
    size_t flat = 0;   // elements of a flat buffer: count plus the alignment gaps
    int find(const std::string &name) const {
        for (size_t i = 0; i < specs.size(); i++) if (specs[i].name == name) return (int)i;
        return -1;
    }
};

inline TensorList build_tensor_list(const Config &c) {
    TensorList tl;
    visit_tensors<float>(c, nullptr, [&](const std::string &name, std::vector<int64_t> shape, DType dt, OptGroup g, float **) {
        TensorSpec s{name, shape, dt, g, shape_numel(shape), tensor_align(tl.flat)};
        tl.count += s.numel;
        tl.flat = s.offset + s.numel;
        tl.specs.push_back(s);
    });
    return tl;
}

// Point every field of `p` into the flat buffer `base` (parameters, gradients, or optimizer
// state: any buffer laid out like the tensor list).
template <typename T>
void params_bind(Params<T> &p, const Config &c, T *base) {
    size_t off = 0;
    visit_tensors<T>(c, &p, [&](const std::string &, std::vector<int64_t> shape, DType, OptGroup, T **slot) {
        off = tensor_align(off);  // the same offsets as build_tensor_list
        *slot = base + off;
        off += shape_numel(shape);
    });
}
