//! The encoder's element-wise passes, fused and done in place on the output of a matrix
//! product: bias plus activation after the feed-forward product, bias plus residual plus layer
//! norm after each block. Each is one pass over memory instead of the three to five separate
//! tensor ops (each with a fresh allocation) they replace, and runs on the current rayon pool
//! rather than on candle's own element-wise pool, so the caller's pool bounds every thread.
//!
//! Row-major `(rows, width)` f32 matrices only; anything else is refused as a candle error.

use candle_core::{CpuStorage, InplaceOp1, InplaceOp2, Layout};
use rayon::prelude::*;

use super::bert::Activation;

/// Rows handed to one rayon task: enough work per task that splitting costs nothing.
const ROWS_PER_TASK: usize = 16;

/// `erf` for f32 as a rational function of `x²` on [-4, 4] (outside it erf is ±1 in f32):
/// only multiplies, adds and one division, so the compiler vectorizes the loop around it
/// (not `mul_add`: without FMA in the build's target features that is a libm call),
/// where libm's `erff` is a branchy scalar call that cost as much as a matrix product per
/// feed-forward element. Eigen's `generic_fast_erf_float` coefficients; absolute error under
/// 1e-6 against libm over the whole range (see the tests).
#[inline]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_600_2e-3;
    p = p * x2 + -1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    x * p / q
}

/// `eˣ` for f32 as Cephes' `expf` computes it: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a
/// degree-7 polynomial for `eʳ`, and `2ⁿ` built from its exponent bits. Only multiplies, adds
/// and integer casts, so the loop around it vectorizes, where libm's `expf` is a scalar call
/// per score (a tenth of all embedding time, measured). `x` is clamped to [-87, 88], where
/// f32 `eˣ` neither underflows to a subnormal nor overflows; relative error under 2e-7 (see
/// the tests).
#[inline]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so `n · LN2_HI` is exact for every n this range produces.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2²³ rounds to the nearest integer in the FPU's own mode,
    // without `round()` (a libm call on targets without SSE4.1).
    const ROUND: f32 = 12_582_912.0;
    // Its bits hold `n + 127` in the low mantissa bits, offset by ROUND's own bits: `2ⁿ` is
    // built from them with integer adds and shifts, never a float-to-int cast (which Rust
    // saturates lane by lane, keeping the loop scalar).
    const ROUND_BITS_LESS_BIAS: u32 = 0x4B40_0000 - 127;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    er * f32::from_bits(shifted.to_bits().wrapping_sub(ROUND_BITS_LESS_BIAS) << 23)
}

/// The sum of `f(x)` over `xs` in eight running totals, which the compiler keeps in vector
/// lanes (one running total is a chain of scalar adds).
#[inline]
fn sum_of(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += f(x);
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().map(|&x| f(x)).sum::<f32>()
}

/// Softmax over the last dimension, in place: each row becomes `e^(x - max) / Σ`.
pub(crate) struct Softmax;

impl InplaceOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let w = l.dims().last().copied().unwrap_or(1).max(1);
        for row in rows_mut(s, l, w)?.chunks_exact_mut(w) {
            let max = row.iter().copied().fold(f32::MIN, f32::max);
            // Apart from the sum, which a running f32 total would keep scalar.
            row.iter_mut().for_each(|x| *x = exp(*x - max));
            let inv = 1.0 / sum_of(row, |x| x);
            row.iter_mut().for_each(|x| *x *= inv);
        }
        Ok(())
    }
}

impl Activation {
    #[inline]
    fn apply_f32(self, x: f32) -> f32 {
        match self {
            Activation::Gelu => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::GeluTanh => {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
            }
            Activation::Relu => x.max(0.0),
        }
    }
}

fn rows_mut<'a>(
    s: &'a mut CpuStorage,
    l: &Layout,
    width: usize,
) -> candle_core::Result<&'a mut [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused op on a non-contiguous tensor".into()))?;
    match s {
        CpuStorage::F32(v) if (end - start) % width == 0 => Ok(&mut v[start..end]),
        _ => Err(candle_core::Error::Msg(format!(
            "fused op wants f32 rows of {width}"
        ))),
    }
}

fn rows<'a>(s: &'a CpuStorage, l: &Layout, width: usize) -> candle_core::Result<&'a [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused op on a non-contiguous tensor".into()))?;
    match s {
        CpuStorage::F32(v) if (end - start) % width == 0 => Ok(&v[start..end]),
        _ => Err(candle_core::Error::Msg(format!(
            "fused op wants f32 rows of {width}"
        ))),
    }
}

/// `x ← act(x + bias)`, row by row; `act` `None` adds the bias only.
pub(crate) struct BiasAct<'a> {
    pub bias: &'a [f32],
    pub act: Option<Activation>,
}

impl InplaceOp1 for BiasAct<'_> {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let w = self.bias.len();
        let xs = rows_mut(s, l, w)?;
        // One loop per activation, chosen once: a `match` per element would keep the loop
        // scalar.
        fn each(xs: &mut [f32], bias: &[f32], f: impl Fn(f32) -> f32 + Sync) {
            xs.par_chunks_mut(bias.len() * ROWS_PER_TASK)
                .for_each(|block| {
                    for row in block.chunks_exact_mut(bias.len()) {
                        for (x, b) in row.iter_mut().zip(bias) {
                            *x = f(*x + b);
                        }
                    }
                });
        }
        match self.act {
            Some(Activation::Gelu) => each(xs, self.bias, |x| Activation::Gelu.apply_f32(x)),
            Some(Activation::GeluTanh) => {
                each(xs, self.bias, |x| Activation::GeluTanh.apply_f32(x))
            }
            Some(Activation::Relu) => each(xs, self.bias, |x| Activation::Relu.apply_f32(x)),
            None => each(xs, self.bias, |x| x),
        }
        Ok(())
    }
}

/// A layer norm's parameters.
pub(crate) struct Norm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f32,
}

impl Norm {
    /// Normalizes one row in place (mean and variance in two passes, as the reference does).
    #[inline]
    pub fn apply(&self, row: &mut [f32]) {
        let n = row.len() as f32;
        let mean = sum_of(row, |x| x) / n;
        let var = sum_of(row, |x| (x - mean) * (x - mean)) / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        for ((x, g), b) in row.iter_mut().zip(&self.gamma).zip(&self.beta) {
            *x = (*x - mean) * inv * g + b;
        }
    }
}

/// `x ← norm(x + bias + residual)`, row by row: the end of each attention and feed-forward
/// block.
pub(crate) struct AddNorm<'a> {
    pub bias: &'a [f32],
    pub norm: &'a Norm,
}

impl InplaceOp2 for AddNorm<'_> {
    fn name(&self) -> &'static str {
        "add-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let w = self.bias.len();
        let xs = rows_mut(s1, l1, w)?;
        let res = rows(s2, l2, w)?;
        if xs.len() != res.len() {
            return Err(candle_core::Error::Msg(
                "add-norm: residual of another shape".into(),
            ));
        }
        xs.par_chunks_mut(w * ROWS_PER_TASK)
            .zip(res.par_chunks(w * ROWS_PER_TASK))
            .for_each(|(block, rblock)| {
                for (row, r) in block.chunks_exact_mut(w).zip(rblock.chunks_exact(w)) {
                    for ((x, b), r) in row.iter_mut().zip(self.bias).zip(r) {
                        *x += b + r;
                    }
                    self.norm.apply(row);
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_libm() {
        let worst = (-870_000..=880_000)
            .map(|i| i as f32 / 10_000.0)
            .map(|x| ((exp(x) - x.exp()) / x.exp()).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 2e-7, "exp off by {worst} (relative)");
    }

    #[test]
    fn softmax_matches_candle() {
        let xs: Vec<f32> = (0..3 * 50)
            .map(|i| ((i * 37) % 101) as f32 / 7.0 - 6.0)
            .collect();
        let t = candle_core::Tensor::from_vec(xs, (3, 50), &candle_core::Device::Cpu).unwrap();
        let reference = candle_nn::ops::softmax_last_dim(&t)
            .unwrap()
            .flatten_all()
            .unwrap();
        t.inplace_op1(&Softmax).unwrap();
        let got = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (g, r) in got.iter().zip(reference.to_vec1::<f32>().unwrap()) {
            assert!((g - r).abs() < 1e-6, "{g} against {r}");
        }
    }

    #[test]
    fn fast_erf_matches_libm() {
        let xs: Vec<f32> = (-60_000..=60_000).map(|i| i as f32 / 10_000.0).collect();
        let t = candle_core::Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap();
        let reference = t.erf().unwrap().to_vec1::<f32>().unwrap();
        let worst = xs
            .iter()
            .zip(&reference)
            .map(|(x, r)| (erf(*x) - r).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "erf off by {worst}");
    }
}
