// ema_tool: the EMA schedule of common/optim.h, for test/test_extras.sh.
//
//   build/ema_tool DECAY WARMUP STEPS    one line per step t < STEPS: "t decay" (%.17g), then the
//                                         weight the final EMA gives the step-0 weights, and the EMA
//                                         of the sequence p_t = t run through ema_update_cpu
#include <cstdio>
#include <cstdlib>

#include "../common/optim.h"  // defines: ema_decay_at, ema_update_cpu

int main(int argc, char **argv) {
    if (argc != 4) fatal_config("usage: ema_tool DECAY WARMUP(0|1) STEPS");
    Config c;
    c.ema_decay = atof(argv[1]);
    c.ema_warmup = atoi(argv[2]);
    const long steps = atol(argv[3]);
    double w0 = 1.0;  // weight of the initial weights in the average
    float ema = 0.f;  // the EMA starts at the initial weights, p_0 = 0 here
    for (long t = 0; t < steps; t++) {
        const double d = ema_decay_at(c, t);
        printf("%ld %.17g\n", t, d);
        w0 *= d;
        const float p = (float)(t + 1);  // the weights after step t
        ema_update_cpu(&ema, &p, 1, d);
    }
    printf("init_weight %.17g\nema %.9g\n", w0, ema);
    return 0;
}
