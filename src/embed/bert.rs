//! The BERT encoder: embeddings, then N layers of self-attention and feed-forward, returning
//! the last hidden state. Inference only (no dropout), f32 on the CPU.
//!
//! Written here over candle-nn rather than taken from candle-transformers: that crate compiles
//! hundreds of model families, minutes of cold build on two cores, for the one we need. It
//! follows `transformers/models/bert/modeling_bert.py` and reads the same weight names.
//!
//! It knows nothing of files or tokenizers: weights come from a [`Weights`] source that checks
//! names and shapes, and inputs are token ids already padded to one length.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear};
use serde::Deserialize;

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

    fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
            Activation::Relu => xs.relu(),
        }
    }
}

/// Where the encoder gets its tensors: by Hugging Face name (without any `bert.` prefix),
/// checked against the shape the config implies.
pub(crate) trait Weights {
    type Error;
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, Self::Error>;
}

pub(crate) struct Bert {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    layers: Vec<Layer>,
    device: Device,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    activation: Activation,
}

impl Bert {
    /// Build the encoder. `config` must already be validated (hidden size divisible by the
    /// number of heads, a known activation); see `embed::load_config`.
    pub fn load<W: Weights>(
        config: &Config,
        activation: Activation,
        w: &W,
    ) -> Result<Bert, W::Error> {
        let h = config.hidden_size;
        let embedding = |name: &str, rows: usize| -> Result<Embedding, W::Error> {
            Ok(Embedding::new(w.get(name, &[rows, h])?, h))
        };
        let linear = |name: &str, out: usize, inp: usize| -> Result<Linear, W::Error> {
            let weight = w.get(&format!("{name}.weight"), &[out, inp])?;
            let bias = w.get(&format!("{name}.bias"), &[out])?;
            Ok(Linear::new(weight, Some(bias)))
        };
        let norm = |name: &str| -> Result<LayerNorm, W::Error> {
            let weight = w.get(&format!("{name}.weight"), &[h])?;
            let bias = w.get(&format!("{name}.bias"), &[h])?;
            Ok(LayerNorm::new(weight, bias, config.layer_norm_eps))
        };
        let heads = config.num_attention_heads;
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}");
                Ok(Layer {
                    query: linear(&format!("{p}.attention.self.query"), h, h)?,
                    key: linear(&format!("{p}.attention.self.key"), h, h)?,
                    value: linear(&format!("{p}.attention.self.value"), h, h)?,
                    attention_out: linear(&format!("{p}.attention.output.dense"), h, h)?,
                    attention_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                    intermediate: linear(
                        &format!("{p}.intermediate.dense"),
                        config.intermediate_size,
                        h,
                    )?,
                    output: linear(&format!("{p}.output.dense"), h, config.intermediate_size)?,
                    output_norm: norm(&format!("{p}.output.LayerNorm"))?,
                    heads,
                    head_dim: h / heads,
                    activation,
                })
            })
            .collect::<Result<Vec<_>, W::Error>>()?;
        Ok(Bert {
            word: embedding("embeddings.word_embeddings.weight", config.vocab_size)?,
            position: embedding(
                "embeddings.position_embeddings.weight",
                config.max_position_embeddings,
            )?,
            token_type: embedding(
                "embeddings.token_type_embeddings.weight",
                config.type_vocab_size,
            )?,
            norm: norm("embeddings.LayerNorm")?,
            layers,
            device: Device::Cpu,
        })
    }

    /// The last hidden state, `(batch, seq, hidden)`. `ids`, `type_ids` and `mask` are
    /// `(batch, seq)` u32; `mask` is 1 for real tokens and 0 for padding. The caller keeps
    /// `seq` within `max_position_embeddings`.
    pub fn forward(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        let positions = Tensor::arange(0u32, seq as u32, &self.device)?;
        let xs = self
            .word
            .forward(ids)?
            .add(&self.token_type.forward(type_ids)?)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        let mut xs = self.norm.forward(&xs)?;
        // Padding gets a large negative score before the softmax, so no real token attends to
        // it; (batch, 1, 1, seq) broadcasts over heads and query positions. f32::MIN, as the
        // reference implementation uses, stays finite when added to any finite score.
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * f64::from(f32::MAX))?
            .unsqueeze(1)?
            .unsqueeze(1)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, &bias)?;
        }
        Ok(xs)
    }
}

impl Layer {
    fn forward(&self, xs: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, h) = xs.dims3()?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, s, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        // Scaling the queries rather than the scores costs s*h multiplies instead of s*s*heads.
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let q = split((self.query.forward(xs)? * scale)?)?;
        let k = split(self.key.forward(xs)?)?;
        let v = split(self.value.forward(xs)?)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, h))?;
        let attended = self
            .attention_norm
            .forward(&self.attention_out.forward(&context)?.add(xs)?)?;
        let inner = self
            .activation
            .apply(&self.intermediate.forward(&attended)?)?;
        self.output_norm
            .forward(&self.output.forward(&inner)?.add(&attended)?)
    }
}
