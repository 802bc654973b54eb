//! Int8 matrix products for the encoder's linear layers, on CPUs with AVX-512 VNNI.
//!
//! Why: the f32 products already run at this machine's FMA peak (`brain bench embed` prints
//! both), so no f32 code makes them faster. VNNI's `vpdpbusd` does 64 u8 × i8 multiply-adds per
//! instruction where an f32 FMA does 16, and the operands are a quarter the bytes.
//!
//! Scheme (dynamic quantization, the one ONNX Runtime and PyTorch use for BERT encoders):
//! - weights per output column, symmetric: `w[k][o] ≈ sw[o] · q[k][o]`, `q` in [-127, 127];
//! - activations per row, asymmetric: `x[t][k] ≈ lo[t] + step[t] · u[t][k]`, `u` in [0, 255],
//!   so a row's range uses all 256 levels whatever its sign (a GELU output is mostly ≥ 0);
//! - `y[t][o] ≈ sw[o] · (step[t] · Σₖ u[t][k] q[k][o] + lo[t] · Σₖ q[k][o])`.
//!
//! The integer sums are exact, and each row is quantized on its own, so a row's result depends
//! only on that row: which texts share a batch cannot change a vector.
//!
//! This is the one place in the crate with `unsafe`: the vector loads and stores (which take
//! raw pointers) and the call into the `#[target_feature]` kernel, made only after the CPU was
//! checked for those features. Each block says why it holds.
#![allow(unsafe_code)]

use rayon::prelude::*;

/// Outputs per panel: two 16-lane registers.
const NR: usize = 32;
/// Rows per kernel call: 8 rows × 2 registers = 16 accumulators, half the register file.
const MR: usize = 8;
/// Row blocks handed to one rayon task.
const BLOCKS_PER_TASK: usize = 4;

/// Whether this CPU runs the int8 kernel.
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A `(k, n)` weight matrix quantized and laid out for the kernel.
///
/// Invariant: one exists only on a CPU that runs the kernel ([`Matrix::new`] checks), which is
/// what makes calling the kernel from [`Matrix::forward`] sound.
pub(crate) struct Matrix {
    k: usize,
    n: usize,
    /// `k` rounded up to whole groups of 4 (one `vpdpbusd` lane's four bytes), divided by 4.
    groups: usize,
    /// Panels of `NR` columns; in each, for each group `g`, `NR` columns × 4 bytes: byte
    /// `(g · NR + j) · 4 + r` is `q[4g + r][panel · NR + j]`. Padding is zero.
    packed: Vec<i8>,
    /// `sw`, per column, padded to whole panels.
    scale: Vec<f32>,
    /// `Σₖ q[k][o]` as f32 (exact: at most 127 · k).
    col_sum: Vec<f32>,
}

impl Matrix {
    /// Quantize `w`, row-major `(k, n)`; `None` on a CPU without the kernel's features, or
    /// for an empty matrix (which has nothing to quantize).
    pub fn new(w: &[f32], k: usize, n: usize) -> Option<Matrix> {
        if !supported() || k == 0 || n == 0 || w.len() != k * n {
            return None;
        }
        let groups = k.div_ceil(4);
        let panels = n.div_ceil(NR);
        let mut scale = vec![0f32; panels * NR];
        let mut col_sum = vec![0f32; panels * NR];
        let mut packed = vec![0i8; panels * groups * NR * 4];
        for o in 0..n {
            let max = (0..k).map(|i| w[i * n + o].abs()).fold(0f32, f32::max);
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            scale[o] = s;
            let (panel, j) = (o / NR, o % NR);
            let mut sum = 0i32;
            for i in 0..k {
                let q = (w[i * n + o] / s).round().clamp(-127.0, 127.0) as i8;
                sum += i32::from(q);
                let (g, r) = (i / 4, i % 4);
                packed[((panel * groups + g) * NR + j) * 4 + r] = q;
            }
            col_sum[o] = sum as f32;
        }
        Some(Matrix {
            k,
            n,
            groups,
            packed,
            scale,
            col_sum,
        })
    }

    pub fn rows_in(&self) -> usize {
        self.k
    }

    pub fn cols_out(&self) -> usize {
        self.n
    }

    /// `x · W` for `x` row-major `(m, k)`: `(m, n)` row-major. Runs on the current rayon pool.
    /// [`Matrix::product`] is the same in portable code, for the tests.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let q = Quantized::new(x, self.k, self.groups);
        let padded = self.scale.len();
        let mut out = vec![0f32; q.rows * padded];
        out.par_chunks_mut(MR * BLOCKS_PER_TASK * padded)
            .enumerate()
            .for_each(|(task, out)| {
                for (b, out) in out.chunks_mut(MR * padded).enumerate() {
                    let first = (task * BLOCKS_PER_TASK + b) * MR;
                    self.block(&q, first, out);
                }
            });
        let m = x.len() / self.k.max(1);
        out.truncate(m * padded);
        if padded != self.n {
            out = out
                .chunks_exact(padded)
                .flat_map(|r| &r[..self.n])
                .copied()
                .collect();
        }
        out
    }

    /// Rows `first..first + MR` of the product into `out` (`MR` rows of the padded width, or
    /// fewer at the end of the matrix).
    fn block(&self, q: &Quantized, first: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `self` exists, so `Matrix::new` found avx512f, avx512bw and avx512vnni on
            // this CPU (the type's invariant).
            unsafe { kernel::block(self, q, first, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (q, first, out);
            unreachable!("the int8 kernel is only built on x86_64");
        }
    }

    /// The same product in portable scalar code: what the kernel must equal, for the tests.
    #[cfg(test)]
    pub fn product(&self, x: &[f32]) -> Vec<f32> {
        let q = Quantized::new(x, self.k, self.groups);
        let m = x.len() / self.k.max(1);
        let mut out = vec![0f32; m * self.n];
        for t in 0..m {
            for o in 0..self.n {
                let (panel, j) = (o / NR, o % NR);
                let mut acc = 0i32;
                for g in 0..self.groups {
                    for (r, u) in q.u[t * self.groups + g]
                        .to_le_bytes()
                        .into_iter()
                        .enumerate()
                    {
                        let w = self.packed[((panel * self.groups + g) * NR + j) * 4 + r];
                        acc += i32::from(u) * i32::from(w);
                    }
                }
                out[t * self.n + o] =
                    self.scale[o] * (q.step[t] * acc as f32 + q.lo[t] * self.col_sum[o]);
            }
        }
        out
    }
}

/// Activations quantized per row, each group of four bytes as one little-endian `u32` (as
/// `vpdpbusd` reads a lane; the padding zero), rows padded with zeros to whole `MR` blocks.
struct Quantized {
    rows: usize,
    u: Vec<u32>,
    step: Vec<f32>,
    lo: Vec<f32>,
}

impl Quantized {
    fn new(x: &[f32], k: usize, groups: usize) -> Quantized {
        let m = x.len() / k.max(1);
        let rows = m.div_ceil(MR) * MR;
        let mut u = vec![0u32; rows * groups];
        let mut step = vec![0f32; rows];
        let mut lo = vec![0f32; rows];
        u.par_chunks_mut(groups)
            .zip(step.par_iter_mut().zip(lo.par_iter_mut()))
            .zip(x.par_chunks(k))
            .for_each(|((u, (step, lo)), x)| {
                let (min, max) = x
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let s = if max > min { (max - min) / 255.0 } else { 1.0 };
                let inv = 1.0 / s;
                *step = s;
                *lo = min;
                // `v - min` is never negative, so adding a half and truncating rounds to
                // nearest (ties up); the cast saturates at 255. `round()` would be a libm call
                // per element, which the compiler cannot vectorize. The bytes go straight into
                // the lanes: in memory a lane's bytes are its four values in order (x86 is
                // little-endian, which is what `vpdpbusd` reads).
                let bytes: &mut [u8] = bytemuck::cast_slice_mut(u);
                for (b, &v) in bytes.iter_mut().zip(x) {
                    *b = ((v - min) * inv + 0.5) as u8;
                }
            });
        Quantized { rows, u, step, lo }
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    use super::{MR, Matrix, NR, Quantized};

    /// # Safety
    /// The CPU must have avx512f, avx512bw and avx512vnni ([`super::supported`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn block(w: &Matrix, q: &Quantized, first: usize, out: &mut [f32]) {
        let groups = w.groups;
        let padded = w.scale.len();
        let rows = (out.len() / padded).min(MR);
        let x = &q.u[first * groups..(first + MR) * groups];
        for (panel, weights) in w.packed.chunks_exact(groups * NR * 4).enumerate() {
            let mut acc = [[_mm512_setzero_si512(); 2]; MR];
            for (g, line) in weights.chunks_exact(NR * 4).enumerate() {
                // SAFETY: `line` is NR · 4 = 128 bytes, so both 64-byte unaligned loads are
                // inside it.
                let (w0, w1) = unsafe {
                    (
                        _mm512_loadu_si512(line.as_ptr().cast()),
                        _mm512_loadu_si512(line.as_ptr().add(64).cast()),
                    )
                };
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_epi32(x[r * groups + g] as i32);
                    acc[0] = _mm512_dpbusd_epi32(acc[0], a, w0);
                    acc[1] = _mm512_dpbusd_epi32(acc[1], a, w1);
                }
            }
            let col = panel * NR;
            let scale = &w.scale[col..col + NR];
            let sums = &w.col_sum[col..col + NR];
            for (r, acc) in acc.iter().enumerate().take(rows) {
                let step = _mm512_set1_ps(q.step[first + r]);
                let lo = _mm512_set1_ps(q.lo[first + r]);
                let dst = &mut out[r * padded + col..r * padded + col + NR];
                for (half, acc) in acc.iter().enumerate() {
                    let at = half * 16;
                    // SAFETY: `scale`, `sums` and `dst` are NR = 32 floats long, so the 16
                    // floats at `at` (0 or 16) are inside each; unaligned loads and stores.
                    unsafe {
                        let sw = _mm512_loadu_ps(scale.as_ptr().add(at));
                        let cs = _mm512_loadu_ps(sums.as_ptr().add(at));
                        let y =
                            _mm512_fmadd_ps(step, _mm512_cvtepi32_ps(*acc), _mm512_mul_ps(lo, cs));
                        _mm512_storeu_ps(dst.as_mut_ptr().add(at), _mm512_mul_ps(sw, y));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic spread of values in [-1, 1) with a few large ones, as layer inputs have.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let v = (s % 20_000) as f32 / 10_000.0 - 1.0;
                if i % 97 == 0 { v * 12.0 } else { v }
            })
            .collect()
    }

    fn f32_product(x: &[f32], w: &[f32], k: usize, n: usize) -> Vec<f32> {
        let m = x.len() / k;
        let mut out = vec![0f32; m * n];
        for t in 0..m {
            for i in 0..k {
                for o in 0..n {
                    out[t * n + o] += x[t * k + i] * w[i * n + o];
                }
            }
        }
        out
    }

    /// Whether this CPU runs the kernel; where it does not, checks that nothing chooses int8
    /// (loading it is refused too, see the embedder tests).
    fn kernel_runs_here() -> bool {
        if !supported() {
            assert_eq!(
                crate::embed::Precision::native(),
                crate::embed::Precision::F32
            );
        }
        supported()
    }

    /// Shapes that are not whole groups, panels or row blocks, so every padding path runs.
    const SHAPES: [(usize, usize, usize); 3] = [(13, 102, 70), (8, 384, 64), (1, 5, 3)];

    #[test]
    fn the_kernel_gives_the_portable_products_and_stays_near_f32() {
        if !kernel_runs_here() {
            return;
        }
        for (seed, &(m, k, n)) in SHAPES.iter().enumerate() {
            let x = values(m * k, seed as u32 + 1);
            let w = values(k * n, seed as u32 + 100);
            let q = Matrix::new(&w, k, n).unwrap();
            let got = q.forward(&x);
            let portable = q.product(&x);
            let exact = f32_product(&x, &w, k, n);
            assert_eq!(got.len(), m * n);
            let scale = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
            for ((g, p), e) in got.iter().zip(&portable).zip(&exact) {
                // The integer sums are equal; only the last multiply-adds round differently.
                assert!(
                    (g - p).abs() <= 1e-5 * scale,
                    "{m}x{k}x{n}: {g} against {p}"
                );
                // Eight bits each side: within a couple of percent of the largest output.
                assert!(
                    (g - e).abs() <= 0.02 * scale,
                    "{m}x{k}x{n}: {g} against f32 {e}"
                );
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_result_alone_or_among_others() {
        if !kernel_runs_here() {
            return;
        }
        let (m, k, n) = (21, 96, 64);
        let x = values(m * k, 3);
        let q = Matrix::new(&values(k * n, 4), k, n).unwrap();
        let all = q.forward(&x);
        for t in [0, 8, 20] {
            let alone = q.forward(&x[t * k..(t + 1) * k]);
            assert_eq!(alone, all[t * n..(t + 1) * n], "row {t}");
        }
    }
}
