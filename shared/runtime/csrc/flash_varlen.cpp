// Causal attention within documents (R0427's `flash_attn_varlen_func`), through libtorch's own
// FlashAttention-2 kernel: `at::_flash_attention_forward` with cumulative sequence lengths, which
// tch does not expose. q: [total, H, hd], k and v: [total, Hkv, hd] (H a multiple of Hkv: GQA is the
// kernel's), cu_seqlens: int32 [segments + 1] on the same CUDA device. The call goes through the
// dispatcher's autograd key, so the output carries FlashAttentionBackward0 (libtorch's
// `_flash_attention_backward`) when an input requires grad. No dense mask is ever built.
// Catches every C++ exception and reports it as a nonzero return with the message in `err`.

#include <ATen/core/Tensor.h>
#include <ATen/ops/_flash_attention_forward.h>

#include <cstdio>
#include <exception>
#include <optional>

extern "C" {

// Writes a new at::Tensor (the attention output, [total, H, hd]) to `*out`; 0 on success.
// `scale` < 0 means the kernel's default 1/sqrt(hd).
int pgolf_flash_varlen_forward(const at::Tensor* q, const at::Tensor* k, const at::Tensor* v,
                               const at::Tensor* cu_seqlens, int64_t max_seqlen, double scale,
                               at::Tensor** out, char* err, size_t len) {
  try {
    std::optional<double> s = scale < 0 ? std::nullopt : std::optional<double>(scale);
    auto result = at::_flash_attention_forward(*q, *k, *v, *cu_seqlens, *cu_seqlens, max_seqlen,
                                               max_seqlen, /*dropout_p=*/0.0, /*is_causal=*/true,
                                               /*return_debug_mask=*/false, s);
    *out = new at::Tensor(std::get<0>(result));
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(err, len, "%s", e.what());
    return -1;
  } catch (...) {
    std::snprintf(err, len, "unknown C++ exception");
    return -1;
  }
}
}
