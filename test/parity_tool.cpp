// parity_tool: what the C++ CPU reference computes on one batch, for test/parity_check.py to
// compare with the PyTorch reference (dev/ref/model.py) on the same weights and tokens.
//
//   parity_tool INIT.ckpt DATA_DIR B T OUT.ckpt
//
// Reads the first B*T+1 tokens of the train stream (inputs [:-1], targets [1:]), runs forward
// and backward in float and writes, as a .ckpt container: "loss" (scalar), "logits" (B,T,V)
// and "grad/<name>" for every parameter.
#include "../common/checkpoint.h"
#include "../common/data.h"
#include "../common/model_cpu.h"

int main(int argc, char **argv) {
    if (argc != 6) fatal_config("usage: parity_tool INIT.ckpt DATA_DIR B T OUT.ckpt");
    const char *init = argv[1];
    int B = atoi(argv[3]), T = atoi(argv[4]);
    if (B <= 0 || T <= 0) fatal_config("parity_tool: B and T must be positive");
    Checkpoint ck;
    checkpoint_read(init, ck);
    Config c;
    config_defaults(c);
    config_from_checkpoint(c, ck, init);
    ModelCPU<float> m;
    model_build(m, c);
    checkpoint_to_params(ck, m.tensors, m.params_mem.data(), init);

    TrainLoader loader;
    loader.init(argv[2], 0, 1, (int)c.vocab_size);
    std::vector<int32_t> x, y;
    loader.next_batch((long)B * T, 1, x, y);  // world 1, one micro-step: exactly B*T tokens
    model_zero_grad(m);
    float loss = model_forward(m, x.data(), y.data(), B, T);
    model_backward(m, 1.0f);

    Checkpoint out;
    auto add = [&](const std::string &name, std::vector<int64_t> shape, const float *data) {
        CkptTensor t{name, DT_F32, shape, {}};
        t.data.resize(shape_numel(shape) * 4);
        memcpy(t.data.data(), data, t.data.size());
        out.tensors.push_back(std::move(t));
    };
    add("loss", {}, &loss);
    add("logits", {B, T, (int64_t)c.vocab_size}, m.acts.logits);
    for (const TensorSpec &s : m.tensors.specs) add("grad/" + s.name, s.shape, m.grads_mem.data() + s.offset);
    checkpoint_write(argv[5], out);
    printf("loss %.7f\n", loss);
    return 0;
}
