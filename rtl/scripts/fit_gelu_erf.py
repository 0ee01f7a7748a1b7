#!/usr/bin/env python3
"""Derives the polynomial the activation unit uses for GELU's exact (erf) form and writes it for the golden
model (C++) and the RTL (SystemVerilog).

Run from the repository root: `python3 rtl/scripts/fit_gelu_erf.py` (needs NumPy). It rewrites
rtl/golden/src/gelu_erf_coefficients.inc and rtl/common/gelu_erf_coefficients.svh; both are checked in, so
the build never runs it.

The form: gelu(s) = s Phi(s), Phi the standard normal CDF, and Phi(s) = sigmoid(g(s)) with g = logit(Phi),
an odd function. The unit already computes s sigmoid(z) for GELU's tanh form (z = s (c1 + c3 s^2)); the exact
form only needs a better z = s G(u), u = min(s^2, U_MAX), with G a degree-7 polynomial in u evaluated by Horner
in FP32. The fit is a weighted minimax (Lawson's iteratively reweighted least squares) of z against the
double-precision logit(Phi(s)) = ln(Phi(s)) - ln(Phi(-s)) (math.erfc, accurate in both tails), for
s in (0, sqrt(U_MAX)]; g is odd, so negative s need no separate fit.

The weight is what an FP16 result can resolve. With s < 0, Phi(s) ~ e^z and an error dz in z is a relative
error dz in the result: below |s| = 4.2 (|gelu| above the smallest normal FP16) the tolerance is 1.2e-4
(a quarter of an FP16 ulp, 2^-13); beyond, the result is subnormal (absolute ulp 2^-24) and the tolerance is
2^-26 / |gelu(s)|. Beyond sqrt(U_MAX) = 6 the result is below half the smallest subnormal (it rounds to -0 or
is s itself), so u is clamped there and z keeps growing linearly with s. The coefficients are then rounded
to FP32 and the FP32 Horner evaluation is checked against the same tolerance (printed: the worst weighted
error, 1 = the tolerance). Nothing is tuned to a published figure: the only inputs are erfc and FP16's ulp.
"""
import math

import numpy as np

import coefficient_tables

DEGREE = 7
U_MAX = 36.0
NORMAL_LIMIT = 4.2     # |s| below which |gelu(s)| is an FP16 normal
TOL_NORMAL = 1.2e-4    # ~2^-13: a quarter of an FP16 ulp, relative
TOL_SUBNORMAL = 2.0 ** -26  # a quarter of the smallest FP16 subnormal, absolute


def logit_phi(s):
    return math.log(0.5 * math.erfc(-s / math.sqrt(2))) - math.log(0.5 * math.erfc(s / math.sqrt(2)))


def tolerance(s):
    q = 0.5 * math.erfc(s / math.sqrt(2))  # Phi(-s), s > 0: |gelu(-s)| = s q
    return max(TOL_NORMAL, TOL_SUBNORMAL / (s * q))


def fit():
    s = np.linspace(1e-4, math.sqrt(U_MAX), 40001)
    g = np.array([logit_phi(v) / v for v in s])
    weight = np.array([1.0 / tolerance(v) for v in s])
    vander = np.vander(s * s / U_MAX, DEGREE + 1, increasing=True)  # scaled for conditioning
    lawson = np.ones_like(s)
    for _ in range(300):
        c, *_ = np.linalg.lstsq(vander * (s * weight * lawson)[:, None], s * g * weight * lawson, rcond=None)
        err = np.abs((vander @ c - g) * s * weight)
        lawson = lawson * np.sqrt(err)
        lawson /= lawson.max()
    coef = (c / U_MAX ** np.arange(DEGREE + 1)).astype(np.float32)
    # FP32 Horner, as the hardware evaluates it (numpy float32 arithmetic is IEEE round-to-nearest-even)
    s32 = s.astype(np.float32)
    u32 = np.minimum(s32 * s32, np.float32(U_MAX))
    p = np.full_like(u32, coef[DEGREE])
    for k in range(DEGREE - 1, -1, -1):
        p = p * u32 + coef[k]
    z = s32 * p
    worst = max(abs(float(z[i]) - logit_phi(float(s32[i]))) / tolerance(float(s32[i])) for i in range(len(s)))
    return coef, worst


def main():
    coef, worst = fit()
    print(f"degree {DEGREE}, u <= {U_MAX}: worst FP32 error / tolerance = {worst:.4f}")
    coefficient_tables.write(
        "fit_gelu_erf.py",
        {"file": "gelu_erf_coefficients.inc", "limit": "kGeluErfUMaxBits", "table": "kGeluErfCoefficientBits",
         "comment": f"GELU (erf form): z = s G(u), u = min(s^2, U_MAX), G(u) = sum_k c_k u^k; FP32 bits of c_0 .. c_{DEGREE}."},
        {"file": "gelu_erf_coefficients.svh", "limit": "GELU_ERF_U_MAX", "prefix": "GELU_ERF_C",
         "comment": "identical to rtl/golden/src/gelu_erf_coefficients.inc: z = s G(u), u = min(s^2, GELU_ERF_U_MAX)."},
        U_MAX, coef)


if __name__ == "__main__":
    main()
