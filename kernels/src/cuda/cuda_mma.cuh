#pragma once
// The tensor-core pieces shared by the decode-attention kernels (cuda_decode_attention_mma.cu, whose K / V
// tiles go through shared memory, and cuda_decode_attention_regs.cu, which loads them into registers):
// mma.sync.m16n8k16 with FP32 accumulation for FP16 / BF16 operands, packing two floats into an operand
// register, and the in-register moves that reshape fragments (sm_80+; movmatrix sm_75+).
//
// Fragment layouts (PTX ISA, mma.m16n8k16, g = lane / 4, t = lane % 4; a register holds two 16-bit elements,
// the lower index in the low half): A (row-major 16 x 16) regs {(g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..),
// (g+8, 2t+8..)} (row, col); B (16 x 8, "col") regs {(k 2t..2t+1, n g), (k 2t+8.., n g)}; C (16 x 8, FP32)
// {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)}.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace duplex::kernels::cuda {

// Two floats rounded to a packed pair of T (first in the low half), and a packed pair back to floats.
__device__ __forceinline__ __half2 to_pair(float lo, float hi, __half) {
  return __floats2half2_rn(lo, hi);
}
__device__ __forceinline__ __nv_bfloat162 to_pair(float lo, float hi, __nv_bfloat16) {
  return __floats2bfloat162_rn(lo, hi);
}
__device__ __forceinline__ float2 to_float2(__half2 v) {
  return __half22float2(v);
}
__device__ __forceinline__ float2 to_float2(__nv_bfloat162 v) {
  return __bfloat1622float2(v);
}

// mma.sync.m16n8k16 with operands of PTX type `ptx_type` ("f16" / "bf16"), FP32 accumulators c in place.
#define DUPLEX_MMA_M16N8K16(ptx_type, c, a, b0, b1)                           \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." ptx_type "." ptx_type \
               ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n" \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])               \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))

// T = __half or __nv_bfloat16.
template <class T>
struct Mma {
  using Pair = decltype(to_pair(0.0f, 0.0f, T{}));
  __device__ static __forceinline__ void run(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    if constexpr (std::is_same_v<T, __half>) {
      DUPLEX_MMA_M16N8K16("f16", c, a, b0, b1);
    } else {
      DUPLEX_MMA_M16N8K16("bf16", c, a, b0, b1);
    }
  }
  // Two floats rounded to a packed pair (first in the low half).
  __device__ static __forceinline__ std::uint32_t pack(float lo, float hi) {
    const Pair h = to_pair(lo, hi, T{});
    return *reinterpret_cast<const std::uint32_t*>(&h);
  }
  __device__ static __forceinline__ float2 unpack(std::uint32_t v) {
    return to_float2(*reinterpret_cast<const Pair*>(&v));
  }
  // (a, b) as two packed pairs whose sum carries them at about twice the storage precision: hi = the pair
  // rounded, lo = what rounding left out, rounded.
  __device__ static __forceinline__ void split(float a, float b, std::uint32_t& hi, std::uint32_t& lo) {
    hi = pack(a, b);
    const float2 h = unpack(hi);
    lo = pack(a - h.x, b - h.y);
  }
};

#undef DUPLEX_MMA_M16N8K16

// The transpose of an 8 x 8 matrix of 16-bit elements held as one register per lane in the A / C layout
// (lane (g, t): row g, columns 2t, 2t + 1): lane (g, t) gets the transpose's row g, columns 2t, 2t + 1.
__device__ __forceinline__ std::uint32_t transpose8x8(std::uint32_t v) {
  std::uint32_t r;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(r) : "r"(v));
  return r;
}

// {a.low, b.low} and {a.high, b.high}: the 16-bit halves of two registers paired by position.
__device__ __forceinline__ std::uint32_t pair_low_halves(std::uint32_t a, std::uint32_t b) {
  return __byte_perm(a, b, 0x5410);
}
__device__ __forceinline__ std::uint32_t pair_high_halves(std::uint32_t a, std::uint32_t b) {
  return __byte_perm(a, b, 0x7632);
}

}  // namespace duplex::kernels::cuda
