// ckpt_tool: checkpoint test helper (build/ckpt_tool).
//   ckpt_tool random OUT [--OPTION V ...]   random weights for the config (env/flags as train_gpt)
//   ckpt_tool roundtrip IN OUT              read IN, write OUT; exit 1 unless OUT == IN byte for byte
//   ckpt_tool load IN                       read IN as a model (config from the file, exact tensor list)
//   ckpt_tool dump IN                       one line per tensor: name dtype shape crc32(data)
//   ckpt_tool edit IN OUT KEY=VALUE|-TENSOR  change a config value or drop a tensor (valid CRC)
#include <random>

#include "../common/checkpoint.h"

int main(int argc, char **argv) {
    if (argc < 3) fatal_config("usage: ckpt_tool random|roundtrip|load|dump FILE [...]");
    std::string cmd = argv[1];
    if (cmd == "random") {
        Config c;
        std::vector<char *> args = {argv[0]};
        for (int i = 3; i < argc; i++) args.push_back(argv[i]);
        config_parse(c, (int)args.size(), args.data(), P_ALL, "");
        TensorList tl = build_tensor_list(c);
        std::vector<float> p(tl.flat);
        std::mt19937 rng((uint32_t)c.seed);
        const char *std_env = getenv("CKPT_TOOL_STD");  // wider weights exercise the clip percentiles
        std::normal_distribution<float> nd(0.f, std_env ? (float)atof(std_env) : 0.05f);
        for (float &x : p) x = nd(rng);
        Checkpoint ck;
        checkpoint_from_params(ck, c, tl, p.data());
        checkpoint_write(argv[2], ck);
        printf("wrote %s: %zu tensors, %zu params\n", argv[2], tl.specs.size(), tl.count);
    } else if (cmd == "roundtrip") {
        if (argc < 4) fatal_config("usage: ckpt_tool roundtrip IN OUT");
        Checkpoint ck;
        checkpoint_read(argv[2], ck);
        checkpoint_write(argv[3], ck);
        if (read_file_bytes(argv[2]) != read_file_bytes(argv[3])) fatal("%s: rewritten file differs from %s", argv[3], argv[2]);
        printf("identical\n");
    } else if (cmd == "load") {
        Checkpoint ck;
        checkpoint_read(argv[2], ck);
        Config c;
        config_defaults(c);
        config_from_checkpoint(c, ck, argv[2]);
        TensorList tl = build_tensor_list(c);
        std::vector<float> p(tl.flat);
        checkpoint_to_params(ck, tl, p.data(), argv[2]);
        printf("ok %zu tensors %zu params\n", tl.specs.size(), tl.count);
    } else if (cmd == "dump") {
        Checkpoint ck;
        checkpoint_read(argv[2], ck);
        for (auto &t : ck.tensors) {
            std::string shape;
            for (size_t i = 0; i < t.shape.size(); i++) shape += (i ? "," : "") + std::to_string(t.shape[i]);
            printf("%s %s (%s) %08x\n", t.name.c_str(), dtype_name(t.dtype), shape.c_str(), crc32(t.data.data(), t.data.size()));
        }
    } else if (cmd == "edit") {
        if (argc < 5) fatal_config("usage: ckpt_tool edit IN OUT KEY=VALUE|-TENSOR");
        Checkpoint ck;
        checkpoint_read(argv[2], ck);
        std::string e = argv[4];
        if (e[0] == '-') {
            for (size_t i = 0; i < ck.tensors.size(); i++)
                if (ck.tensors[i].name == e.substr(1)) ck.tensors.erase(ck.tensors.begin() + i);
        } else {
            size_t eq = e.find('=');
            for (auto &kv : ck.config) if (kv.first == e.substr(0, eq)) kv.second = e.substr(eq + 1);
        }
        checkpoint_write(argv[3], ck);
    } else {
        fatal_config("unknown command %s", cmd.c_str());
    }
    return 0;
}
