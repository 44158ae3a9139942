"""Float64 check, lane by lane, of the fragment maps sketched for items of at most 8 query rows with the KV tokens as
the MMA's M (`../NOTES.md`, forty-third session; not built): S^T = K Q^T and O^T = V^T P^T on mma.sync m16n8k16, with
K's and V's operands taken by today's FP8 stage loaders (`fp8_k_fragment`, `fp8_v_fragments` in
`kernels/pat_decode.cu`) and P^T exchanged between lanes by shuffles. Each step emulates what one warp's 32 lanes hold,
per PTX's m16n8k16 fragment layouts, and compares with float64 attention over the same 16 tokens:

    python3 docs/perf/kernels/2026-12-02-t8-design/emulate.py
"""

from __future__ import annotations

import numpy as np

D = 128  # head dim
T = 16  # tokens of one k16 block (two 8-token halves)
LANES = range(32)


def mma(a: dict, b: dict) -> dict:
    """m16n8k16 with A (16 x 16), B (16 x 8), C (16 x 8) in PTX's per-lane fragments, by (lane, register) maps:
    a[l] = 8 values (a0..a7), b[l] = 4 values (b0..b3); returns c[l] = 4 values (c0..c3)."""
    A = np.zeros((16, 16))
    B = np.zeros((16, 8))
    for lane in LANES:
        g, t = lane // 4, lane % 4
        for i, (r, k) in enumerate([(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1),
                                    (g, 2 * t + 8), (g, 2 * t + 9), (g + 8, 2 * t + 8), (g + 8, 2 * t + 9)]):
            A[r, k] = a[lane][i]
        for i, (k, n) in enumerate([(2 * t, g), (2 * t + 1, g), (2 * t + 8, g), (2 * t + 9, g)]):
            B[k, n] = b[lane][i]
    C = A @ B
    return {lane: [C[lane // 4, 2 * (lane % 4)], C[lane // 4, 2 * (lane % 4) + 1],
                   C[lane // 4 + 8, 2 * (lane % 4)], C[lane // 4 + 8, 2 * (lane % 4) + 1]] for lane in LANES}


def k_fragment(K: np.ndarray, row: int, kk: int, t: int) -> tuple[float, float, float, float]:
    """fp8_k_fragment: the four values at dims 16 kk + 4t .. + 3 of token row ``row`` (b0 = the first two, b1 = the
    last two), the k16 step's dims permuted: k index 2t, 2t + 1, 2t + 8, 2t + 9 -> dim 4t, 4t + 1, 4t + 2, 4t + 3."""
    d = 16 * kk + 4 * t
    return K[row, d], K[row, d + 1], K[row, d + 2], K[row, d + 3]


def v_fragments(V: np.ndarray, row: int, bg: int, g: int) -> list[list[tuple[float, float]]]:
    """fp8_v_fragments: b[j][0] = (V[row][dim], V[row + 1][dim]) and b[j][1] = (V[row + 8][dim], V[row + 9][dim]) with
    dim = 32 bg + 4g + j, j = 0 .. 3 (``row`` = 2t)."""
    out = []
    for j in range(4):
        dim = 32 * bg + 4 * g + j
        out.append([(V[row, dim], V[row + 1, dim]), (V[row + 8, dim], V[row + 9, dim])])
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    for rows in (1, 4, 8):
        Q = rng.standard_normal((8, D))
        Q[rows:] = 0.0  # rows past the item's: zero (finite scores, never written)
        K = rng.standard_normal((T, D))
        V = rng.standard_normal((T, D))
        scale = 1 / np.sqrt(D)
        # --- S^T = K Q^T: per k16 step kk, A = K (tokens g, g + 8 by k_fragment), B = Q^T (the same dims permutation)
        st = {lane: [0.0] * 4 for lane in LANES}
        for kk in range(D // 16):
            a, b = {}, {}
            for lane in LANES:
                g, t = lane // 4, lane % 4
                k0, k1, k2, k3 = k_fragment(K, g, kk, t)
                k8 = k_fragment(K, g + 8, kk, t)
                a[lane] = [k0, k1, k8[0], k8[1], k2, k3, k8[2], k8[3]]
                q = k_fragment(Q, g, kk, t)  # Q^T's column g = query row g, dims permuted as K's
                b[lane] = list(q)
            c = mma(a, b)
            st = {lane: [st[lane][i] + c[lane][i] for i in range(4)] for lane in LANES}
        S_ref = (Q @ K.T)  # [8 rows, 16 tokens]
        for lane in LANES:
            g, t = lane // 4, lane % 4
            want = [S_ref[2 * t, g], S_ref[2 * t + 1, g], S_ref[2 * t, g + 8], S_ref[2 * t + 1, g + 8]]
            assert np.allclose(st[lane], want), (rows, lane)
        # --- softmax per query row r: its scores at lanes t = r // 2 (c[r % 2] token g, c[2 + r % 2] token g + 8);
        # the max and sum reduce over g (shuffles xor 4, 8, 16)
        p = {lane: [0.0] * 4 for lane in LANES}
        row_sum = np.zeros(8)
        for r in range(8):
            t = r // 2
            vals = [(lane, e, st[lane][e] * scale) for lane in LANES if lane % 4 == t for e in (r % 2, 2 + r % 2)]
            m = max(v for _, _, v in vals)
            for lane, e, v in vals:
                p[lane][e] = np.exp(v - m)
            row_sum[r] = sum(p[lane][e] for lane, e, _ in vals)
        # --- P^T as B of O^T = V^T P^T: lane (g, t) needs P[row g][tokens 2t, 2t + 1] (b0, b1) and tokens 2t + 8,
        # 2t + 9 (b2, b3): token j of row g sits in lane 4 (j % 8) + g // 2, element (g % 2) + 2 (j >= 8). Each source
        # lane packs (c0, c1) and (c2, c3) (rows 2(g // 2), + 1 of its token); four shuffles bring tokens 2t, 2t + 1
        # (c0c1 of lanes 8t + g // 2 and 8t + 4 + g // 2) and 2t + 8, 2t + 9 (their c2c3); the destination keeps half g % 2
        pb = {}
        for lane in LANES:
            g, t = lane // 4, lane % 4
            src0, src1 = 8 * t + g // 2, 8 * t + 4 + g // 2
            pb[lane] = [p[src0][g % 2], p[src1][g % 2], p[src0][2 + g % 2], p[src1][2 + g % 2]]
        # --- O^T += V^T P^T: m-block (bg, h) rows g -> dim 32 bg + 4g + 2h, g + 8 -> 32 bg + 4g + 2h + 1, A from
        # v_fragments' b[2h] (a0a1 tokens 2t, 2t + 1; a4a5 tokens 2t + 8, 2t + 9) and b[2h + 1] (a2a3, a6a7)
        O = np.zeros((8, D))
        for bg in range(D // 32):
            for h in range(2):
                a = {}
                for lane in LANES:
                    g, t = lane // 4, lane % 4
                    vf = v_fragments(V, 2 * t, bg, g)
                    lo, hi = vf[2 * h], vf[2 * h + 1]
                    a[lane] = [lo[0][0], lo[0][1], hi[0][0], hi[0][1], lo[1][0], lo[1][1], hi[1][0], hi[1][1]]
                c = mma(a, pb)
                for lane in LANES:  # c0, c1: dim 32 bg + 4g + 2h, rows 2t, 2t + 1; c2, c3: that dim + 1
                    g, t = lane // 4, lane % 4
                    d0 = 32 * bg + 4 * g + 2 * h
                    O[2 * t, d0], O[2 * t + 1, d0] = c[lane][0], c[lane][1]
                    O[2 * t, d0 + 1], O[2 * t + 1, d0 + 1] = c[lane][2], c[lane][3]
        O /= row_sum[:, None]
        w = np.exp(S_ref * scale - (S_ref * scale).max(axis=1, keepdims=True))
        ref = (w / w.sum(axis=1, keepdims=True)) @ V
        err = np.abs(O[:rows] - ref[:rows]).max()
        assert err < 1e-12, (rows, err)
        print(f"rows {rows}: S^T, softmax, P^T exchange and O^T match float64 attention over 16 tokens "
              f"(max abs error {err:.1e})")
    print("per 16-token block and k16 step: S^T 2 x 8 = 16 HMMAs per 32 tokens, O^T 8 x 2 = 16 (16-row items: 32 + 32)")


if __name__ == "__main__":
    main()
