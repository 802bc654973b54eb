//! A tiny random-weight BERT written to a folder, laid out like a sentence-transformers model
//! (`config.json`, `tokenizer.json`, `model.safetensors`, `modules.json`, `1_Pooling/`,
//! `sentence_bert_config.json`), so tests exercise the real loading path without a download.
//!
//! It uses only std, serde_json and safetensors, and no `crate::` paths, so integration tests can
//! include this same file with `#[path = "../../src/embed/tiny.rs"] mod tiny;`. Its vectors mean
//! nothing; they are deterministic for a given seed.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::path::Path;

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::{Value, json};

pub const HIDDEN: usize = 32;
pub const LAYERS: usize = 2;
pub const HEADS: usize = 2;
pub const INTERMEDIATE: usize = 64;
pub const MAX_POSITIONS: usize = 64;
/// What `sentence_bert_config.json` asks for; the embedder truncates to this.
pub const MAX_SEQ_LENGTH: usize = 32;
/// What the tokenizer.json itself says about truncation and padding. Real exports carry such
/// values too (all-MiniLM-L6-v2's says 128 where the model wants 256); the embedder must
/// override them, and this differs from `MAX_SEQ_LENGTH` so tests can tell.
pub const TOKENIZER_FILE_MAX_LENGTH: usize = 16;

const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
const WORDS: [&str; 29] = [
    "the", "cat", "dog", "sat", "on", "mat", "is", "in", "of", "and", "to", "brain", "note",
    "graph", "search", "link", "tag", "file", "text", "hello", "world", "quick", "brown", "fox",
    "jumps", "over", "lazy", "car", "road",
];
const PUNCTUATION: [&str; 10] = [".", ",", "!", "?", "'", "-", ":", ";", "(", ")"];

/// The word pieces, in id order: the special tokens first (`[PAD]` is 0, as in BERT), then
/// punctuation, digits, letters, `##`-continuations of letters, and whole words.
pub fn vocab() -> Vec<String> {
    let mut v: Vec<String> = SPECIAL.iter().map(|s| s.to_string()).collect();
    v.extend(PUNCTUATION.iter().map(|s| s.to_string()));
    v.extend(('0'..='9').map(|c| c.to_string()));
    v.extend(('a'..='z').map(|c| c.to_string()));
    v.extend(('a'..='z').map(|c| format!("##{c}")));
    v.extend(WORDS.iter().map(|s| s.to_string()));
    v
}

/// One named tensor of the checkpoint: name, shape and little-endian f32 values.
pub struct TinyTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Write the whole model folder with the Hugging Face weight names.
pub fn write_tiny_bert(dir: &Path, seed: u64) -> io::Result<()> {
    write_tiny_bert_with_prefix(dir, seed, "")
}

/// Like [`write_tiny_bert`], with every weight name behind `prefix` (e.g. `"bert."`, as
/// checkpoints saved from a task model have it).
pub fn write_tiny_bert_with_prefix(dir: &Path, seed: u64, prefix: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir.join("1_Pooling"))?;
    write_json(&dir.join("config.json"), &config())?;
    write_json(&dir.join("tokenizer.json"), &tokenizer())?;
    write_json(
        &dir.join("modules.json"),
        &json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        ]),
    )?;
    write_json(
        &dir.join("1_Pooling/config.json"),
        &json!({
            "word_embedding_dimension": HIDDEN,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false
        }),
    )?;
    write_json(
        &dir.join("sentence_bert_config.json"),
        &json!({"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": false}),
    )?;
    let mut tensors = weights(seed);
    for t in &mut tensors {
        t.name = format!("{prefix}{}", t.name);
    }
    write_safetensors(&dir.join("model.safetensors"), &tensors)
}

/// The `config.json` of the tiny model, in the Hugging Face BERT format.
pub fn config() -> Value {
    json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab().len(),
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute"
    })
}

/// A BERT WordPiece `tokenizer.json` over [`vocab`], shaped like the ones the Hugging Face
/// tokenizers library writes for BERT models.
pub fn tokenizer() -> Value {
    let vocab = vocab();
    let ids: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let id = |t: &str| vocab.iter().position(|v| v == t).unwrap_or(1);
    let added: Vec<Value> = SPECIAL
        .iter()
        .map(|t| {
            json!({"id": id(t), "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": TOKENIZER_FILE_MAX_LENGTH,
                       "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": TOKENIZER_FILE_MAX_LENGTH}, "direction": "Right",
                    "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0,
                    "pad_token": "[PAD]"},
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}}
            ],
            "pair": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 1}}
            ],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [id("[CLS]")], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [id("[SEP]")], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": ids}
    })
}

/// Random weights under the Hugging Face BERT names, plus the unused `pooler` that real
/// checkpoints carry. Scaled so activations stay in a sane range through the layers.
pub fn weights(seed: u64) -> Vec<TinyTensor> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, kind: Init| {
        let n: usize = shape.iter().product();
        let fan_in = *shape.last().unwrap_or(&1) as f32;
        let values = (0..n)
            .map(|_| {
                let u = rng.unit();
                match kind {
                    Init::Embedding => u * 0.5,
                    Init::Dense => u * 1.7 / fan_in.sqrt(),
                    Init::Bias => u * 0.05,
                    Init::NormWeight => 1.0 + u * 0.1,
                }
            })
            .collect();
        out.push(TinyTensor {
            name,
            shape,
            values,
        });
    };
    let (h, i) = (HIDDEN, INTERMEDIATE);
    let e = "embeddings";
    push(
        format!("{e}.word_embeddings.weight"),
        vec![vocab().len(), h],
        Init::Embedding,
    );
    push(
        format!("{e}.position_embeddings.weight"),
        vec![MAX_POSITIONS, h],
        Init::Embedding,
    );
    push(
        format!("{e}.token_type_embeddings.weight"),
        vec![2, h],
        Init::Embedding,
    );
    push(format!("{e}.LayerNorm.weight"), vec![h], Init::NormWeight);
    push(format!("{e}.LayerNorm.bias"), vec![h], Init::Bias);
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for part in ["query", "key", "value"] {
            push(
                format!("{p}.attention.self.{part}.weight"),
                vec![h, h],
                Init::Dense,
            );
            push(
                format!("{p}.attention.self.{part}.bias"),
                vec![h],
                Init::Bias,
            );
        }
        push(
            format!("{p}.attention.output.dense.weight"),
            vec![h, h],
            Init::Dense,
        );
        push(
            format!("{p}.attention.output.dense.bias"),
            vec![h],
            Init::Bias,
        );
        push(
            format!("{p}.attention.output.LayerNorm.weight"),
            vec![h],
            Init::NormWeight,
        );
        push(
            format!("{p}.attention.output.LayerNorm.bias"),
            vec![h],
            Init::Bias,
        );
        push(
            format!("{p}.intermediate.dense.weight"),
            vec![i, h],
            Init::Dense,
        );
        push(format!("{p}.intermediate.dense.bias"), vec![i], Init::Bias);
        push(format!("{p}.output.dense.weight"), vec![h, i], Init::Dense);
        push(format!("{p}.output.dense.bias"), vec![h], Init::Bias);
        push(
            format!("{p}.output.LayerNorm.weight"),
            vec![h],
            Init::NormWeight,
        );
        push(format!("{p}.output.LayerNorm.bias"), vec![h], Init::Bias);
    }
    push("pooler.dense.weight".into(), vec![h, h], Init::Dense);
    push("pooler.dense.bias".into(), vec![h], Init::Bias);
    out
}

/// Write f32 tensors as a safetensors file (through the safetensors crate, the same one the
/// loader reads with), with the `{"format": "pt"}` metadata PyTorch exports carry.
pub fn write_safetensors(path: &Path, tensors: &[TinyTensor]) -> io::Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            TensorView::new(Dtype::F32, t.shape.clone(), b)
                .map(|v| (t.name.clone(), v))
                .map_err(io::Error::other)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(io::Error::other)
}

fn write_json(path: &Path, value: &Value) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    std::fs::write(path, text)
}

#[derive(Clone, Copy)]
enum Init {
    Embedding,
    Dense,
    Bias,
    NormWeight,
}

/// A small, well-mixed generator, so the weights need no `rand` and are the same everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}
