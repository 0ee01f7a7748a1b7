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

namespace duplex::kernels::cuda {

template <class T>
struct Mma;
template <>
struct Mma<__half> {
  __device__ static __forceinline__ void run(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  // Two floats rounded to a packed pair (first in the low half).
  __device__ static __forceinline__ std::uint32_t pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&h);
  }
  __device__ static __forceinline__ float2 unpack(std::uint32_t v) {
    return __half22float2(*reinterpret_cast<const __half2*>(&v));
  }
};
template <>
struct Mma<__nv_bfloat16> {
  __device__ static __forceinline__ void run(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ static __forceinline__ std::uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&h);
  }
  __device__ static __forceinline__ float2 unpack(std::uint32_t v) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
  }
};

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
