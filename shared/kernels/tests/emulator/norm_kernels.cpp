// Runs the norm kernels (cuda/qkv_norm_rope.cu, cuda/mix_norm.cu) on the CPU emulator, on inputs
// and with launch geometry from tests/norm_kernels_on_cpu.rs, exchanging raw little-endian files
// in a directory (bf16 as 16-bit words, f32 as floats).
//
//   norm_kernels qkv DIR B T H Hkv hd rows_per_block backward_blocks sq_b sq_t sq_h sk_b sk_t sk_h sv_b sv_t sv_h eps
//   norm_kernels mix DIR N d K backward_blocks eps
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
    if (what == "qkv" && argc == 20) {
        const long long B = arg(3), T = arg(4), rows = B * T;
        const int H = arg(5), Hkv = arg(6), hd = arg(7), W = (H + 2 * Hkv) * hd;
        const unsigned rows_per_block = arg(8), backward_blocks = arg(9);
        const long long sq[3] = {arg(10), arg(11), arg(12)}, sk[3] = {arg(13), arg(14), arg(15)},
                        sv[3] = {arg(16), arg(17), arg(18)};
        const float eps = std::stof(argv[19]);
        const unsigned threads = rows_per_block * (W / 8);
        // Gradients: the storage behind the strides (as many elements as the tensor has).
        auto x = input<u16>(dir, "qkv", rows * W);
        auto cos = input<float>(dir, "cos", T * hd / 2);
        auto sin = input<float>(dir, "sin", T * hd / 2);
        auto gain = input<float>(dir, "q_gain", H);
        auto dq = input<u16>(dir, "dq", rows * H * hd);
        auto dk = input<u16>(dir, "dk", rows * Hkv * hd);
        auto dv = input<u16>(dir, "dv", rows * Hkv * hd);
        std::vector<u16> q(rows * H * hd), k(rows * Hkv * hd), v(rows * Hkv * hd), dqkv(rows * W);
        std::vector<float> partial(backward_blocks * H);
        launch((rows + rows_per_block - 1) / rows_per_block, threads, [&] {
            qkv::qkv_norm_rope_forward(x.data(), cos.data(), sin.data(), gain.data(), q.data(), k.data(),
                                       v.data(), rows, T, H, Hkv, hd, eps);
        });
        launch(backward_blocks, threads, [&] {
            qkv::qkv_norm_rope_backward(x.data(), cos.data(), sin.data(), gain.data(), dq.data(), sq[0], sq[1],
                                        sq[2], dk.data(), sk[0], sk[1], sk[2], dv.data(), sv[0], sv[1], sv[2],
                                        dqkv.data(), partial.data(), rows, T, H, Hkv, hd, eps);
        });
        output(dir, "q", q);
        output(dir, "k", k);
        output(dir, "v", v);
        output(dir, "dqkv", dqkv);
        output(dir, "dq_gain_partial", partial);
        return 0;
    }
    if (what == "mix" && argc == 8) {
        const long long N = arg(3);
        const int d = arg(4), K = arg(5);
        const unsigned backward_blocks = arg(6);
        const float eps = std::stof(argv[7]);
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
        mix::mix_norm_forward_k##KK(x.data(), x0.data(), m.data(), xm.data(), n.data(), N, d, eps);      \
    });                                                                                                  \
    launch(backward_blocks, threads, [&] {                                                               \
        mix::mix_norm_backward_k##KK(x.data(), x0.data(), m.data(), dxm.data(), dn.data(), dx.data(),    \
                                     dx0.data(), partial.data(), N, d, eps);                             \
    });                                                                                                  \
    launch(blocks, threads, [&] { mix::rms_norm_forward_k##KK(x.data(), y.data(), N, d, eps); });       \
    launch(backward_blocks, threads,                                                                     \
           [&] { mix::rms_norm_backward_k##KK(x.data(), dn.data(), dy_dx.data(), N, d, eps); });
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
    std::fprintf(stderr, "usage: see the top of norm_kernels.cpp\n");
    return 2;
}
