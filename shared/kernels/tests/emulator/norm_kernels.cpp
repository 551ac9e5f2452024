// Runs the row kernels (cuda/qkv_norm_rope.cu, cuda/mix_norm.cu, cuda/xsa.cu, cuda/smear_gate.cu)
// on the CPU emulator, on inputs and with launch geometry from src/ops/norms_emulated.rs,
// exchanging raw little-endian files in a directory (bf16 as 16-bit words, f32 as floats).
//
//   norm_kernels qkv DIR B T H Hkv hd rd rows_per_block backward_blocks sq_b sq_t sq_h sk_b sk_t sk_h sv_b sv_t sv_h eps
//   norm_kernels mix DIR N d K backward_blocks eps scale
//   norm_kernels xsa DIR B T H Hkv hd rows_per_block blocks sy_b sy_t sy_h sg_b sg_t sg_h
//     (dy is written with y's strides, as the op allocates it for a dense y)
//   norm_kernels smear DIR B T d rows_per_block forward_blocks backward_blocks
#include <string>

#include "cuda_on_cpu.h"
// What src/nvrtc.rs prepends to every kernel source; shared by both namespaces below.
#include "common.cuh"

namespace qkv {
#include "qkv_norm_rope.cu"
}
namespace mix {
#include "mix_norm.cu"
}
namespace xsa {
#include "xsa.cu"
}
namespace smear {
#include "smear_gate.cu"
}

using u16 = unsigned short;

template <class T>
std::vector<T> input(const std::string& dir, const char* name, size_t n) {
    const std::string path = dir + "/" + name;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
        std::perror(path.c_str());
        std::exit(2);
    }
    std::vector<T> v(n);
    if (std::fread(v.data(), sizeof(T), n, f) != n) {
        std::fprintf(stderr, "%s: fewer than %zu values\n", path.c_str(), n);
        std::exit(2);
    }
    std::fclose(f);
    return v;
}

template <class T>
void output(const std::string& dir, const char* name, const std::vector<T>& v) {
    const std::string path = dir + "/" + name;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f || std::fwrite(v.data(), sizeof(T), v.size(), f) != v.size()) {
        std::perror(path.c_str());
        std::exit(2);
    }
    std::fclose(f);
}

int main(int argc, char** argv) {
    if (argc < 3) return 2;
    const std::string what = argv[1], dir = argv[2];
    auto arg = [&](int i) { return std::stoll(argv[i]); };
    if (what == "qkv" && argc == 21) {
        const long long B = arg(3), T = arg(4), rows = B * T;
        const int H = arg(5), Hkv = arg(6), hd = arg(7), rd = arg(8), W = (H + 2 * Hkv) * hd;
        const unsigned rows_per_block = arg(9), backward_blocks = arg(10);
        const long long sq[3] = {arg(11), arg(12), arg(13)}, sk[3] = {arg(14), arg(15), arg(16)},
                        sv[3] = {arg(17), arg(18), arg(19)};
        const float eps = std::stof(argv[20]);
        const unsigned threads = rows_per_block * (W / 8);
        // Gradients: the storage behind the strides (as many elements as the tensor has).
        auto x = input<u16>(dir, "qkv", rows * W);
        auto cos = input<float>(dir, "cos", T * rd / 2);
        auto sin = input<float>(dir, "sin", T * rd / 2);
        auto gain = input<float>(dir, "q_gain", H);
        auto dq = input<u16>(dir, "dq", rows * H * hd);
        auto dk = input<u16>(dir, "dk", rows * Hkv * hd);
        auto dv = input<u16>(dir, "dv", rows * Hkv * hd);
        std::vector<u16> q(rows * H * hd), k(rows * Hkv * hd), v(rows * Hkv * hd), dqkv(rows * W);
        std::vector<float> partial(backward_blocks * H);
        launch((rows + rows_per_block - 1) / rows_per_block, threads, [&] {
            qkv::qkv_norm_rope_forward(x.data(), cos.data(), sin.data(), gain.data(), q.data(), k.data(),
                                       v.data(), rows, T, H, Hkv, hd, rd, eps);
        });
        launch(backward_blocks, threads, [&] {
            qkv::qkv_norm_rope_backward(x.data(), cos.data(), sin.data(), gain.data(), dq.data(), sq[0], sq[1],
                                        sq[2], dk.data(), sk[0], sk[1], sk[2], dv.data(), sv[0], sv[1], sv[2],
                                        dqkv.data(), partial.data(), rows, T, H, Hkv, hd, rd, eps);
        });
        output(dir, "q", q);
        output(dir, "k", k);
        output(dir, "v", v);
        output(dir, "dqkv", dqkv);
        output(dir, "dq_gain_partial", partial);
        return 0;
    }
    if (what == "mix" && argc == 9) {
        const long long N = arg(3);
        const int d = arg(4), K = arg(5);
        const unsigned backward_blocks = arg(6);
        const float eps = std::stof(argv[7]), scale = std::stof(argv[8]);
        auto x = input<u16>(dir, "x", N * d);
        auto x0 = input<u16>(dir, "x0", N * d);
        auto m = input<float>(dir, "mix", 2 * d);
        auto dxm = input<u16>(dir, "dxm", N * d);
        auto dn = input<u16>(dir, "dn", N * d);
        std::vector<u16> xm(N * d), n(N * d), dx(N * d), dx0(N * d), y(N * d), dy_dx(N * d);
        std::vector<float> partial(backward_blocks * 2 * d);
        const unsigned warps = 4, threads = 32 * warps, blocks = (N + warps - 1) / warps;
#define RUN(KK)                                                                                          \
    launch(blocks, threads, [&] {                                                                        \
        mix::mix_norm_forward_k##KK(x.data(), x0.data(), m.data(), xm.data(), n.data(), N, d, eps,       \
                                    scale);                                                              \
    });                                                                                                  \
    launch(backward_blocks, threads, [&] {                                                               \
        mix::mix_norm_backward_k##KK(x.data(), x0.data(), m.data(), dxm.data(), dn.data(), dx.data(),    \
                                     dx0.data(), partial.data(), N, d, eps, scale);                      \
    });                                                                                                  \
    launch(blocks, threads, [&] { mix::rms_norm_forward_k##KK(x.data(), y.data(), N, d, eps, scale); }); \
    launch(backward_blocks, threads,                                                                     \
           [&] { mix::rms_norm_backward_k##KK(x.data(), dn.data(), dy_dx.data(), N, d, eps, scale); });
        if (K == 1) {
            RUN(1)
        } else if (K == 2) {
            RUN(2)
        } else if (K == 4) {
            RUN(4)
        } else {
            return 2;
        }
        output(dir, "xm", xm);
        output(dir, "n", n);
        output(dir, "dx", dx);
        output(dir, "dx0", dx0);
        output(dir, "dmix_partial", partial);
        output(dir, "rms_y", y);
        output(dir, "rms_dx", dy_dx);
        return 0;
    }
    if (what == "xsa" && argc == 16) {
        const long long B = arg(3), T = arg(4), rows = B * T;
        const int H = arg(5), Hkv = arg(6), hd = arg(7);
        const unsigned rows_per_block = arg(8), blocks = arg(9);
        const long long sy[3] = {arg(10), arg(11), arg(12)}, sg[3] = {arg(13), arg(14), arg(15)};
        const unsigned threads = rows_per_block * (Hkv * hd / 8);
        // y, g and dy: the storage behind the strides (as many elements as the tensor has).
        auto y = input<u16>(dir, "y", rows * H * hd);
        auto v = input<u16>(dir, "v", rows * Hkv * hd);
        auto g = input<u16>(dir, "g", rows * H * hd);
        std::vector<u16> out(rows * H * hd), dy(rows * H * hd), dv(rows * Hkv * hd);
        launch(blocks, threads, [&] {
            xsa::xsa_forward(y.data(), sy[0], sy[1], sy[2], v.data(), out.data(), rows, T, H, Hkv, hd);
        });
        launch(blocks, threads, [&] {
            xsa::xsa_backward(y.data(), sy[0], sy[1], sy[2], v.data(), g.data(), sg[0], sg[1], sg[2],
                              dy.data(), sy[0], sy[1], sy[2], dv.data(), rows, T, H, Hkv, hd);
        });
        output(dir, "out", out);
        output(dir, "dy", dy);
        output(dir, "dv", dv);
        return 0;
    }
    if (what == "smear" && argc == 9) {
        const long long B = arg(3), T = arg(4), rows = B * T;
        const int d = arg(5);
        const unsigned rows_per_block = arg(6), forward_blocks = arg(7), backward_blocks = arg(8);
        const unsigned threads = rows_per_block * (d / 8);
        auto x = input<u16>(dir, "x", rows * d);
        auto gate = input<float>(dir, "gate", d);
        auto g = input<u16>(dir, "g", rows * d);
        std::vector<u16> out(rows * d), dx(rows * d);
        std::vector<float> partial(backward_blocks * d);
        launch(forward_blocks, threads,
               [&] { smear::smear_gate_forward(x.data(), gate.data(), out.data(), rows, T, d); });
        launch(backward_blocks, threads, [&] {
            smear::smear_gate_backward(x.data(), gate.data(), g.data(), dx.data(), partial.data(), rows, T, d);
        });
        output(dir, "out", out);
        output(dir, "dx", dx);
        output(dir, "dgate_partial", partial);
        return 0;
    }
    std::fprintf(stderr, "usage: see the top of norm_kernels.cpp\n");
    return 2;
}
