//! The BERT encoder: embeddings, then N layers of self-attention and feed-forward, returning
//! the last hidden state. Inference only (no dropout), f32 on the CPU.
//!
//! Written here over candle-nn rather than taken from candle-transformers: that crate compiles
//! hundreds of model families, minutes of cold build on two cores, for the one we need. It
//! follows `transformers/models/bert/modeling_bert.py` and reads the same weight names.
//!
//! Texts are packed, not padded: a batch is one `(tokens, hidden)` matrix holding every text's
//! tokens back to back, so the projections and the feed-forward layer (nine tenths of the
//! work) are a few large matrix products with no padding rows, and only attention, the one
//! step that mixes tokens, runs per text, over that text's own tokens (so no mask either).
//! The texts' attention runs in parallel on the current rayon pool.
//!
//! It knows nothing of files or tokenizers: weights come from a [`Weights`] source that checks
//! names and shapes, and inputs are token ids with each text's length.

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::Deserialize;

use super::Precision;
use super::int8;
use super::ops::{AddNorm, BiasAct, Norm, Softmax};

/// The fields of a Hugging Face BERT `config.json` the encoder needs.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

/// The hidden activation, from `hidden_act`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `gelu`: the exact form, with erf (what BERT checkpoints were trained with).
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn parse(name: &str) -> Option<Activation> {
        match name {
            "gelu" | "gelu_python" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }
}

/// Where the encoder gets its tensors: by Hugging Face name (without any `bert.` prefix),
/// checked against the shape the config implies.
pub(crate) trait Weights {
    type Error: From<candle_core::Error>;
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, Self::Error>;
}

pub(crate) struct Bert {
    /// Embedding tables, row-major `(rows, hidden)`.
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    intermediate: usize,
}

/// One encoder layer. Weight matrices are stored transposed, `(in, out)`, so each product is a
/// plain `x · W`; the query, key and value projections are one `(h, 3h)` matrix, with the
/// attention scale folded into the query part.
struct Layer {
    qkv: Linear,
    qkv_bias: Vec<f32>,
    attention_out: Linear,
    attention_out_bias: Vec<f32>,
    attention_norm: Norm,
    intermediate: Linear,
    intermediate_bias: Vec<f32>,
    output: Linear,
    output_bias: Vec<f32>,
    output_norm: Norm,
    heads: usize,
    head_dim: usize,
    activation: Activation,
}

fn vec_of(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

impl Bert {
    /// Build the encoder. `config` must already be validated (hidden size divisible by the
    /// number of heads, a known activation); see `embed::load_config`.
    pub fn load<W: Weights>(
        config: &Config,
        activation: Activation,
        precision: Precision,
        w: &W,
    ) -> Result<Bert, W::Error> {
        let h = config.hidden_size;
        let eps = config.layer_norm_eps as f32;
        let table = |name: &str, rows: usize| -> Result<Vec<f32>, W::Error> {
            Ok(vec_of(&w.get(name, &[rows, h])?)?)
        };
        // (W transposed to (in, out), bias)
        let linear = |name: &str, out: usize, inp: usize| -> Result<(Tensor, Tensor), W::Error> {
            let weight = w.get(&format!("{name}.weight"), &[out, inp])?;
            let bias = w.get(&format!("{name}.bias"), &[out])?;
            Ok((weight, bias))
        };
        let transposed = |t: &Tensor| -> candle_core::Result<Linear> {
            Linear::new(t.t()?.contiguous()?, precision)
        };
        let norm = |name: &str| -> Result<Norm, W::Error> {
            Ok(Norm {
                gamma: vec_of(&w.get(&format!("{name}.weight"), &[h])?)?,
                beta: vec_of(&w.get(&format!("{name}.bias"), &[h])?)?,
                eps,
            })
        };
        let heads = config.num_attention_heads;
        let head_dim = h / heads;
        // Scaling the queries rather than the scores costs nothing once folded into the
        // weights, where scaling the scores would cost heads × seq² multiplies per text.
        let scale = 1.0 / (head_dim as f32).sqrt();
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                let (qw, qb) = linear(&format!("{p}.attention.self.query"), h, h)?;
                let (kw, kb) = linear(&format!("{p}.attention.self.key"), h, h)?;
                let (vw, vb) = linear(&format!("{p}.attention.self.value"), h, h)?;
                let scaled = |t: &Tensor| -> candle_core::Result<Tensor> {
                    let v: Vec<f32> = vec_of(t)?.iter().map(|x| x * scale).collect();
                    Tensor::from_vec(v, t.shape(), &Device::Cpu)
                };
                let (qw, qb) = (scaled(&qw)?, scaled(&qb)?);
                let qkv = transposed(&Tensor::cat(&[&qw, &kw, &vw], 0)?)?;
                let qkv_bias = vec_of(&Tensor::cat(&[&qb, &kb, &vb], 0)?)?;
                let (ow, ob) = linear(&format!("{p}.attention.output.dense"), h, h)?;
                let (iw, ib) = linear(
                    &format!("{p}.intermediate.dense"),
                    config.intermediate_size,
                    h,
                )?;
                let (fw, fb) = linear(&format!("{p}.output.dense"), h, config.intermediate_size)?;
                Ok(Layer {
                    qkv,
                    qkv_bias,
                    attention_out: transposed(&ow)?,
                    attention_out_bias: vec_of(&ob)?,
                    attention_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                    intermediate: transposed(&iw)?,
                    intermediate_bias: vec_of(&ib)?,
                    output: transposed(&fw)?,
                    output_bias: vec_of(&fb)?,
                    output_norm: norm(&format!("{p}.output.LayerNorm"))?,
                    heads,
                    head_dim,
                    activation,
                })
            })
            .collect::<Result<Vec<_>, W::Error>>()?;
        Ok(Bert {
            word: table("embeddings.word_embeddings.weight", config.vocab_size)?,
            position: table(
                "embeddings.position_embeddings.weight",
                config.max_position_embeddings,
            )?,
            token_type: table(
                "embeddings.token_type_embeddings.weight",
                config.type_vocab_size,
            )?,
            norm: norm("embeddings.LayerNorm")?,
            layers,
            hidden: h,
            intermediate: config.intermediate_size,
        })
    }

    /// Floating-point operations (a multiply-add counts two) to encode one text of `len`
    /// tokens: per layer, the four `h × h` projections and the two feed-forward products for
    /// each token, plus attention's scores and weighted sum over the text's own tokens.
    /// The precision the linear layers run in.
    pub fn precision(&self) -> Precision {
        match self.layers.first().map(|l| &l.qkv) {
            Some(Linear::Int8(_)) => Precision::Int8,
            _ => Precision::F32,
        }
    }

    pub fn flops(&self, len: usize) -> f64 {
        let (h, i, n) = (self.hidden as f64, self.intermediate as f64, len as f64);
        let per_token = 2.0 * (4.0 * h * h + 2.0 * h * i) + 2.0 * 2.0 * n * h;
        self.layers.len() as f64 * per_token * n
    }

    /// The last hidden state of packed texts, `(tokens, hidden)` row-major: text `t`'s rows
    /// follow text `t - 1`'s. `ids` and `type_ids` hold every text's tokens back to back and
    /// `lens` each text's count. The caller keeps each length within
    /// `max_position_embeddings` and ids within the vocabulary.
    pub fn forward(
        &self,
        ids: &[u32],
        type_ids: &[u32],
        lens: &[usize],
    ) -> candle_core::Result<Tensor> {
        let h = self.hidden;
        let total = ids.len();
        if type_ids.len() != total || lens.iter().sum::<usize>() != total {
            return Err(candle_core::Error::Msg(
                "ids, type ids and lengths disagree".into(),
            ));
        }
        let mut xs = vec![0f32; total * h];
        let mut row = 0;
        for &len in lens {
            for pos in 0..len {
                let out = &mut xs[row * h..(row + 1) * h];
                let pieces = [
                    (&self.word, ids[row] as usize),
                    (&self.token_type, type_ids[row] as usize),
                    (&self.position, pos),
                ];
                for (table, i) in pieces {
                    let src = table.get(i * h..(i + 1) * h).ok_or_else(|| {
                        candle_core::Error::Msg(format!("token {i} outside its embedding table"))
                    })?;
                    for (o, s) in out.iter_mut().zip(src) {
                        *o += s;
                    }
                }
                self.norm.apply(out);
                row += 1;
            }
        }
        let mut xs = Tensor::from_vec(xs, (total, h), &Device::Cpu)?;
        let starts: Vec<usize> = lens
            .iter()
            .scan(0, |at, &n| {
                let s = *at;
                *at += n;
                Some(s)
            })
            .collect();
        for layer in &self.layers {
            xs = layer.forward(&xs, &starts, lens)?;
        }
        Ok(xs)
    }
}

impl Layer {
    fn forward(
        &self,
        xs: &Tensor,
        starts: &[usize],
        lens: &[usize],
    ) -> candle_core::Result<Tensor> {
        let qkv = self.qkv.forward(xs)?;
        qkv.inplace_op1(&BiasAct {
            bias: &self.qkv_bias,
            act: None,
        })?;
        let context = starts
            .par_iter()
            .zip(lens)
            .map(|(&start, &len)| self.attend(&qkv, start, len))
            .collect::<candle_core::Result<Vec<Tensor>>>()?;
        let attended = self.attention_out.forward(&Tensor::cat(&context, 0)?)?;
        attended.inplace_op2(
            xs,
            &AddNorm {
                bias: &self.attention_out_bias,
                norm: &self.attention_norm,
            },
        )?;
        let inner = self.intermediate.forward(&attended)?;
        inner.inplace_op1(&BiasAct {
            bias: &self.intermediate_bias,
            act: Some(self.activation),
        })?;
        let out = self.output.forward(&inner)?;
        out.inplace_op2(
            &attended,
            &AddNorm {
                bias: &self.output_bias,
                norm: &self.output_norm,
            },
        )?;
        Ok(out)
    }

    /// Self-attention of one text over its own rows of the packed `(tokens, 3h)` projections:
    /// its context vectors, `(len, h)`.
    fn attend(&self, qkv: &Tensor, start: usize, len: usize) -> candle_core::Result<Tensor> {
        let parts = qkv
            .narrow(0, start, len)?
            .reshape((len, 3, self.heads, self.head_dim))?
            .permute((1, 2, 0, 3))?
            .contiguous()?;
        let (q, k, v) = (parts.get(0)?, parts.get(1)?, parts.get(2)?);
        let scores = q.matmul(&k.t()?)?;
        scores.inplace_op1(&Softmax)?;
        scores
            .matmul(&v)?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((len, self.heads * self.head_dim))
    }
}

/// A weight matrix stored transposed, `(in, out)`, in the precision the encoder was loaded with.
enum Linear {
    F32(Tensor),
    Int8(int8::Matrix),
}

impl Linear {
    fn new(w: Tensor, precision: Precision) -> candle_core::Result<Linear> {
        Ok(match precision {
            Precision::F32 => Linear::F32(w),
            Precision::Int8 => {
                let (k, n) = w.dims2()?;
                // `None` for an empty matrix, which f32 handles as it is. (Loading refused int8
                // on a CPU without the kernel before getting here.)
                match int8::Matrix::new(&vec_of(&w)?, k, n) {
                    Some(m) => Linear::Int8(m),
                    None => Linear::F32(w),
                }
            }
        })
    }

    /// `xs · W` for `xs` of `(rows, in)`.
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Linear::F32(w) => xs.matmul(w),
            Linear::Int8(w) => {
                let (rows, k) = xs.dims2()?;
                if k != w.rows_in() {
                    return Err(candle_core::Error::Msg(format!(
                        "a {k}-wide input to a {}-wide layer",
                        w.rows_in()
                    )));
                }
                let out = {
                    let (storage, layout) = xs.storage_and_layout();
                    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) = &*storage
                    else {
                        return Err(candle_core::Error::Msg(
                            "int8 layers take f32 on the CPU".into(),
                        ));
                    };
                    let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
                        candle_core::Error::Msg("int8 layers take contiguous rows".into())
                    })?;
                    w.forward(&v[start..end])
                };
                Tensor::from_vec(out, (rows, w.cols_out()), &Device::Cpu)
            }
        }
    }
}
