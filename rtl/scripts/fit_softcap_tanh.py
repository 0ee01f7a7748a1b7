#!/usr/bin/env python3
"""Derives the polynomial the softmax unit uses for the attention logit soft-cap (Gemma 2) near zero and
writes it for the golden model (C++) and the RTL (SystemVerilog).

Run from the repository root: `python3 rtl/scripts/fit_softcap_tanh.py` (plain Python 3, no NumPy). It
rewrites rtl/golden/src/softcap_tanh_coefficients.inc and rtl/common/softcap_tanh_coefficients.svh; both are
checked in, so the build never runs it.

The cap: x' = c tanh(x / c). With y = x / c and v = y^2 < 1 (|y| < 1) the unit computes x' = x P(v), P a
degree-7 polynomial in v fitted to tanh(y) / y = tanh(sqrt v) / sqrt v, evaluated by Horner in FP32; beyond,
it uses the exp / reciprocal units (rtl/golden/README.md). x P(v) keeps relative accuracy down to x = 0, where
1 - e^(-2|y|) of the exp form would cancel. P(0) = c_0 = 1 exactly (tanh(y) / y -> 1), so a tiny x passes
unchanged; c_1 .. c_7 are a minimax fit of the relative error (Lawson's iteratively reweighted least squares,
in the Chebyshev basis of v in [0, 1] for conditioning, then converted to powers of v), rounded to FP32. The
FP32 Horner evaluation is checked against math.tanh over the interval (printed: the worst relative error of
P, FP32 arithmetic included). tanh is analytic in a disc of radius pi/2 around 0, so degree 7 in v reaches
FP32 precision on [0, 1]. Nothing is tuned to a published figure: the only input is math.tanh.
"""
import math
import struct
from fractions import Fraction

import coefficient_tables

DEGREE = 7        # P(v) = 1 + c_1 v + ... + c_7 v^7
V_MAX = 1.0       # the polynomial covers |y| < 1; the exp / reciprocal form covers |y| >= 1
POINTS = 4001


def f32(v):
    return struct.unpack("<f", struct.pack("<f", float(v)))[0]


def target(v):  # tanh(sqrt v) / sqrt v
    if v == 0.0:
        return 1.0
    y = math.sqrt(v)
    return math.tanh(y) / y


def chebyshev(t, n):  # T_0(t) .. T_{n-1}(t)
    out = [1.0, t]
    while len(out) < n:
        out.append(2 * t * out[-1] - out[-2])
    return out[:n]


def least_squares(rows, rhs):
    """min |A c - b| by Householder QR (pure Python, double)."""
    a = [list(r) for r in rows]
    b = list(rhs)
    m, n = len(a), len(a[0])
    for k in range(n):
        norm = math.sqrt(sum(a[i][k] ** 2 for i in range(k, m)))
        alpha = -norm if a[k][k] > 0 else norm
        v = [0.0] * m
        v[k] = a[k][k] - alpha
        for i in range(k + 1, m):
            v[i] = a[i][k]
        vv = sum(x * x for x in v[k:])
        if vv == 0:
            continue
        for j in range(k, n):
            s = 2 * sum(v[i] * a[i][j] for i in range(k, m)) / vv
            for i in range(k, m):
                a[i][j] -= s * v[i]
        s = 2 * sum(v[i] * b[i] for i in range(k, m)) / vv
        for i in range(k, m):
            b[i] -= s * v[i]
    c = [0.0] * n
    for k in range(n - 1, -1, -1):
        c[k] = (b[k] - sum(a[k][j] * c[j] for j in range(k + 1, n))) / a[k][k]
    return c


def fit():
    # P(v) = 1 + v Q(v), Q of degree DEGREE - 1 in the Chebyshev basis of t = 2 v / V_MAX - 1. Relative error
    # (P - f) / f = (v Q - (f - 1)) / f: weighted least squares with weights (v / f) x the Lawson weights.
    # Chebyshev-spaced points: dense near both ends
    vs = [V_MAX * (1 - math.cos(math.pi * i / (POINTS - 1))) / 2 for i in range(POINTS)]
    vs = [v for v in vs if v > 0]
    f = [target(v) for v in vs]
    basis = [chebyshev(2 * v / V_MAX - 1, DEGREE) for v in vs]
    lawson = [1.0] * len(vs)
    for _ in range(60):
        rows = [[v / fv * w * bk for bk in bs] for v, fv, w, bs in zip(vs, f, lawson, basis)]
        rhs = [(fv - 1) / fv * w for fv, w in zip(f, lawson)]
        q = least_squares(rows, rhs)
        err = [abs(v * sum(qk * bk for qk, bk in zip(q, bs)) - (fv - 1)) / fv
               for v, fv, bs in zip(vs, f, basis)]
        lawson = [w * math.sqrt(e) for w, e in zip(lawson, err)]
        top = max(lawson)
        lawson = [w / top for w in lawson]
    # Chebyshev -> powers of v, exactly (Fractions), then c_k = coefficient of v^k in 1 + v Q(v).
    power = [Fraction(0)] * DEGREE
    t_prev, t_cur = [Fraction(1)], [Fraction(-1), Fraction(2) / Fraction(V_MAX)]  # T_0, T_1 in powers of v
    polys = [t_prev, t_cur]
    for _ in range(2, DEGREE):
        nxt = [Fraction(0)] * (len(t_cur) + 1)
        for i, cf in enumerate(t_cur):  # 2 t T_k, t = 2 v / V_MAX - 1
            nxt[i + 1] += 2 * cf * Fraction(2) / Fraction(V_MAX)
            nxt[i] -= 2 * cf
        for i, cf in enumerate(t_prev):
            nxt[i] -= cf
        t_prev, t_cur = t_cur, nxt
        polys.append(t_cur)
    for qk, poly in zip(q, polys):
        for i, cf in enumerate(poly):
            power[i] += Fraction(qk) * cf
    coef = [1.0] + [f32(float(c)) for c in power]
    # FP32 Horner, as the hardware evaluates it: p = c_7; p = p v + c_k (k = 6 .. 0), each step rounded.
    worst = 0.0
    for i in range(200001):
        v = f32(V_MAX * i / 200000)
        p = coef[DEGREE]
        for k in range(DEGREE - 1, -1, -1):
            p = f32(f32(p * v) + coef[k])
        worst = max(worst, abs(p - target(v)) / target(v))
    return coef, worst


def main():
    coef, worst = fit()
    print(f"degree {DEGREE}, v < {V_MAX}: worst relative error of P (FP32 Horner) = {worst:.3e}")
    coefficient_tables.write(
        "fit_softcap_tanh.py",
        {"file": "softcap_tanh_coefficients.inc", "limit": "kSoftcapPolyVMaxBits",
         "table": "kSoftcapTanhCoefficientBits",
         "comment": f"Soft-cap, |y| < 1: tanh(y) / y ~ P(v) = sum_k c_k v^k, v = y^2; FP32 c_0 .. c_{DEGREE}."},
        {"file": "softcap_tanh_coefficients.svh", "limit": "SOFTCAP_V_MAX", "prefix": "SOFTCAP_C",
         "comment": "identical to rtl/golden/src/softcap_tanh_coefficients.inc: tanh(y) / y ~ P(y^2), |y| < 1."},
        V_MAX, coef)


if __name__ == "__main__":
    main()
