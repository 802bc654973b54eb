//! Sentence embeddings from a local BERT-family model folder (all-MiniLM-L6-v2 by default;
//! bge-small, e5-small and gte-small load the same way), in pure Rust on the CPU.
//!
//! A model folder is what Hugging Face and sentence-transformers publish: `config.json`,
//! `tokenizer.json` and `model.safetensors`, plus the optional sentence-transformers files
//! (`modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json`,
//! `config_sentence_transformers.json`) that choose the pooling, the truncation length and the
//! query/passage prompts. Nothing is ever downloaded.
//!
//! Conventions of the supported families, all expressible through the folder or [`LoadOptions`]:
//!
//! | family | pooling | prompts |
//! | --- | --- | --- |
//! | all-MiniLM-L6-v2, gte-small | mean | none |
//! | bge-small-en-v1.5 | cls | query: `Represent this sentence for searching relevant passages: ` |
//! | e5-small(-v2) | mean | query: `query: `, passage: `passage: ` |
//!
//! Every output vector is L2-normalized, so a dot product is the cosine similarity.
//!
//! Threads. A forward pass runs on the *current* rayon pool: matrix products (gemm),
//! attention (one text per task), softmax, the fused element-wise passes of `ops`, and
//! tokenization. Calling [`Embedder::embed`] inside `pool.install(..)` of a caller-built pool
//! (see [`worker_pool`]) keeps all of it on that pool's threads, at that pool's priority.
//! candle also keeps a process-wide pool of its own for element-wise ops on large tensors; the
//! encoder does none (its element-wise work is fused into `ops`), so that pool stays unused.
//!
//! This module knows nothing of the store, the daemon or async runtimes: it is a synchronous
//! engine piece, called from blocking threads.

mod bert;
mod int8;
mod ops;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tiny;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;
use serde::Deserialize;
use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationParams};

use bert::{Activation, Bert};

/// Tokens per forward pass (texts are packed, not padded). The feed-forward activations are
/// `tokens × intermediate` floats (12 MB at 2,048 tokens for a 384-wide model), and attention
/// holds `heads × len²` scores per text in flight (3 MB at 256 tokens, one text per pool
/// thread). Larger passes make no faster matrix products: at 2,048 rows the products already
/// run at the machine's rate (`brain bench embed` prints it).
const BATCH_TOKENS: usize = 2048;
/// Texts per forward pass, whatever their length: bounds the per-text bookkeeping.
const BATCH_TEXTS: usize = 64;
/// The nice value of [`worker_pool`] threads: the lowest there is. `SCHED_IDLE` would be lower
/// still, but setting it needs a raw `sched_setscheduler` call (rustix has none, and this crate
/// keeps unsafe code to the int8 kernel); against normal threads nice 19 weighs 15 to their
/// 1024, `SCHED_IDLE` 3.
const WORKER_NICE: i32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("model folder {} does not exist or is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("model file {} is missing", .0.display())]
    Missing(PathBuf),
    #[error(
        "model file {} is missing: only safetensors weights are supported, and this folder has {} \
         (convert it to model.safetensors, e.g. with the safetensors convert script)",
        .path.display(), .found.display()
    )]
    PytorchWeightsOnly { path: PathBuf, found: PathBuf },
    #[error("failed to read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("bad {}: {message}", .path.display())]
    BadFile { path: PathBuf, message: String },
    #[error("unsupported model in {}: {message}", .path.display())]
    Unsupported { path: PathBuf, message: String },
    #[error("bad weights in {}: {message}", .path.display())]
    Weights { path: PathBuf, message: String },
    #[error("invalid embedder option: {0}")]
    InvalidOption(String),
    #[error("invalid embedder option: int8 needs a CPU with AVX-512 VNNI, which this one lacks")]
    Int8Unsupported,
    #[error("failed to tokenize: {0}")]
    Tokenize(String),
    #[error("embedding failed: {0}")]
    Compute(#[from] candle_core::Error),
    #[error("failed to start the embedding thread pool: {0}")]
    ThreadPool(String),
}

/// How token vectors become one text vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the real (unpadded) tokens.
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
}

impl Pooling {
    fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        }
    }
}

/// Overrides for what the model folder says; `None` keeps the folder's choice.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub pooling: Option<Pooling>,
    /// Tokens per text, `[CLS]` and `[SEP]` included; longer texts are cut at the end.
    pub max_tokens: Option<usize>,
    /// Prepended by [`Embedder::embed_queries`] (e.g. `"query: "` for e5).
    pub query_prefix: Option<String>,
    /// Prepended by [`Embedder::embed_passages`] (e.g. `"passage: "` for e5).
    pub passage_prefix: Option<String>,
    /// What the linear layers compute in; `None` is [`Precision::native`].
    pub precision: Option<Precision>,
}

/// One `(m, k) · (k, n)` matrix product of ones in a given precision, as the encoder's linear
/// layers compute it, for `brain bench embed` to time against the whole encoder.
pub struct Product(ProductOperands);

enum ProductOperands {
    F32(Tensor, Tensor),
    Int8(Vec<f32>, int8::Matrix),
}

impl Product {
    pub fn new(precision: Precision, m: usize, k: usize, n: usize) -> Result<Product, EmbedError> {
        Ok(Product(match precision {
            Precision::F32 => ProductOperands::F32(
                Tensor::ones((m, k), DType::F32, &Device::Cpu)?,
                Tensor::ones((k, n), DType::F32, &Device::Cpu)?,
            ),
            Precision::Int8 => match int8::Matrix::new(&vec![1.0; k * n], k, n) {
                Some(w) => ProductOperands::Int8(vec![1.0; m * k], w),
                None => return Err(EmbedError::Int8Unsupported),
            },
        }))
    }

    /// Runs it once on the current rayon pool.
    pub fn run(&self) -> Result<(), EmbedError> {
        match &self.0 {
            ProductOperands::F32(x, w) => drop(x.matmul(w)?),
            ProductOperands::Int8(x, w) => drop(w.forward(x)),
        }
        Ok(())
    }
}

/// What the encoder's linear layers (nine tenths of its work) compute in. Vectors from either
/// agree to a cosine similarity above 0.99 (see the tests), so they share a model id and
/// search across both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    /// Weights per column and activations per row in 8 bits, multiplied with AVX-512 VNNI
    /// (`embed::int8`); only where the CPU has it.
    Int8,
}

impl Precision {
    /// Int8 where the CPU runs its kernel, f32 elsewhere.
    pub fn native() -> Precision {
        if int8::supported() {
            Precision::Int8
        } else {
            Precision::F32
        }
    }

    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "f32" => Some(Precision::F32),
            "int8" => Some(Precision::Int8),
            _ => None,
        }
    }
}

/// A loaded model: tokenizer and encoder weights in memory, ready to embed from any thread.
///
/// Invariant: every vector it returns has [`Embedder::dim`] components and unit L2 norm, and
/// depends only on its text (not on the batch it came in).
pub struct Embedder {
    model: Bert,
    tokenizer: Tokenizer,
    pooling: Pooling,
    max_tokens: usize,
    dim: usize,
    model_id: String,
    query_prefix: String,
    passage_prefix: String,
}

impl fmt::Debug for Embedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Embedder")
            .field("model_id", &self.model_id)
            .field("dim", &self.dim)
            .field("max_tokens", &self.max_tokens)
            .field("pooling", &self.pooling)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Load the model in `dir` as its files describe it.
    pub fn load(dir: &Path) -> Result<Embedder, EmbedError> {
        Embedder::load_with(dir, &LoadOptions::default())
    }

    /// Load the model in `dir`, with `options` taking precedence over its files.
    pub fn load_with(dir: &Path, options: &LoadOptions) -> Result<Embedder, EmbedError> {
        if !dir.is_dir() {
            return Err(EmbedError::NotAFolder(dir.to_path_buf()));
        }
        let (config, activation) = load_config(dir)?;
        let st = SentenceTransformers::load(dir)?;

        let folder_pooling = st.pooling.unwrap_or(Pooling::Mean);
        let pooling = options.pooling.unwrap_or(folder_pooling);
        let max_positions = config.max_position_embeddings;
        // A folder may ask for more than the model has positions for; the model wins.
        let folder_max_tokens = st
            .max_seq_length
            .map_or(max_positions, |n| n.min(max_positions));
        let max_tokens = match options.max_tokens {
            Some(n) if n > max_positions => {
                return Err(EmbedError::InvalidOption(format!(
                    "max_tokens {n} is more than the model's {max_positions} positions"
                )));
            }
            Some(n) => n,
            None => folder_max_tokens,
        };
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = load_tokenizer(&tokenizer_path, max_tokens, config.vocab_size)?;

        let weights_path = dir.join("model.safetensors");
        let bytes = match std::fs::read(&weights_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(missing_weights(dir, weights_path));
            }
            Err(source) => {
                return Err(EmbedError::Read {
                    path: weights_path,
                    source,
                });
            }
        };
        let hash = blake3::hash(&bytes).to_hex();
        let precision = match options.precision {
            Some(Precision::Int8) if !int8::supported() => return Err(EmbedError::Int8Unsupported),
            Some(p) => p,
            None => Precision::native(),
        };
        let model = {
            let st = SafeTensors::deserialize(&bytes).map_err(|e| EmbedError::Weights {
                path: weights_path.clone(),
                message: e.to_string(),
            })?;
            let weights = FileWeights::new(&st, &weights_path);
            Bert::load(&config, activation, precision, &weights)?
        };
        // The tensors were copied out of the file; the file's bytes go before the first batch.
        drop(bytes);

        let mut model_id = format!("{}@{}", folder_name(dir), &hash[..12]);
        // Vectors depend on pooling and truncation too: overriding what the folder says makes
        // a different model.
        if pooling != folder_pooling {
            model_id.push_str(&format!("+{}", pooling.as_str()));
        }
        if max_tokens != folder_max_tokens {
            model_id.push_str(&format!("+t{max_tokens}"));
        }
        Ok(Embedder {
            model,
            tokenizer,
            pooling,
            max_tokens,
            dim: config.hidden_size,
            model_id,
            query_prefix: options
                .query_prefix
                .clone()
                .or(st.query_prompt)
                .unwrap_or_default(),
            passage_prefix: options
                .passage_prefix
                .clone()
                .or(st.passage_prompt)
                .unwrap_or_default(),
        })
    }

    /// A stable id for what produced a vector: the folder name and the first 12 hex digits of
    /// the weights file's blake3 (e.g. `all-MiniLM-L6-v2@8087e9bf97c2`), plus `+cls`/`+t128`
    /// when [`LoadOptions`] overrode the folder's pooling or length. Vectors with different ids
    /// are not comparable. (Editing the folder's own pooling or length files does not change
    /// the id: rename the folder when doing that.)
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Components per vector (the model's hidden size).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Tokens per text, `[CLS]` and `[SEP]` included; the rest of a longer text is ignored.
    pub fn precision(&self) -> Precision {
        self.model.precision()
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// What [`Embedder::embed_queries`] puts before each text (often empty).
    pub fn query_prefix(&self) -> &str {
        &self.query_prefix
    }

    /// What [`Embedder::embed_passages`] puts before each text (often empty).
    pub fn passage_prefix(&self) -> &str {
        &self.passage_prefix
    }

    /// Tokens each passage is encoded as ([`Embedder::passage_prefix`] included, after
    /// truncation), for measuring throughput.
    pub fn passage_tokens(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        let owned: Vec<String> = texts
            .iter()
            .map(|t| format!("{}{t}", self.passage_prefix))
            .collect();
        let encodings = self
            .tokenizer
            .encode_batch(owned, true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(encodings.iter().map(Encoding::len).collect())
    }

    /// Floating-point operations the encoder spends on a text of `len` tokens (without
    /// padding), for setting throughput against the machine's matrix-product rate.
    pub fn flops(&self, len: usize) -> f64 {
        self.model.flops(len)
    }

    /// Embed texts as they are: one L2-normalized vector of [`Embedder::dim`] per text, in
    /// order. Texts are grouped by length into padded batches; a text's vector does not depend
    /// on the others. Runs on the current rayon pool (see the module notes on threads).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let mut out = Vec::with_capacity(texts.len());
        let mut start = 0;
        while start < encodings.len() {
            let (mut end, mut tokens) = (start, 0);
            while end < encodings.len()
                && end - start < BATCH_TEXTS
                && (end == start || tokens + encodings[end].len() <= BATCH_TOKENS)
            {
                tokens += encodings[end].len();
                end += 1;
            }
            out.extend(self.forward(&encodings[start..end])?);
            start = end;
        }
        Ok(out)
    }

    /// Embed search queries: [`Embedder::query_prefix`] + text.
    pub fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_prefixed(&self.query_prefix, texts)
    }

    /// Embed passages to be searched: [`Embedder::passage_prefix`] + text.
    pub fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_prefixed(&self.passage_prefix, texts)
    }

    fn embed_prefixed(&self, prefix: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if prefix.is_empty() {
            return self.embed(texts);
        }
        let owned: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        self.embed(&refs)
    }

    /// One packed batch through the encoder, pooled and normalized.
    fn forward(&self, batch: &[Encoding]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let lens: Vec<usize> = batch.iter().map(Encoding::len).collect();
        if let Some(long) = lens.iter().find(|&&n| n > self.max_tokens) {
            // Truncation is set on the tokenizer at load; this would be a tokenizer bug.
            return Err(EmbedError::Tokenize(format!(
                "a text came out at {long} tokens, over the limit of {}",
                self.max_tokens
            )));
        }
        let ids: Vec<u32> = batch.iter().flat_map(|e| e.get_ids()).copied().collect();
        let types: Vec<u32> = batch
            .iter()
            .flat_map(|e| e.get_type_ids())
            .copied()
            .collect();
        let hidden = self
            .model
            .forward(&ids, &types, &lens)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let h = self.dim;
        let mut out = Vec::with_capacity(batch.len());
        let mut row = 0;
        for &len in &lens {
            let rows = &hidden[row * h..(row + len) * h];
            row += len;
            let mut v = match self.pooling {
                Pooling::Cls => rows[..h].to_vec(),
                Pooling::Mean => {
                    let mut sum = vec![0f32; h];
                    for r in rows.chunks_exact(h) {
                        for (s, x) in sum.iter_mut().zip(r) {
                            *s += x;
                        }
                    }
                    // Every text has at least [CLS] and [SEP], so `len` is never zero.
                    sum.iter_mut().for_each(|s| *s /= len as f32);
                    sum
                }
            };
            // As torch's F.normalize: divide by max(norm, 1e-12).
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            out.push(v);
        }
        Ok(out)
    }
}

/// Threads for the background embedding pool: every core. At nice 19 the pool only gets what
/// the rest of the machine leaves (about 1.5% of a core against one busy normal thread), so
/// it need not be held to half the cores to keep queries fast, and on an idle machine it
/// uses all of it.
pub fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A rayon pool of `threads` workers at the lowest priority (nice 19), for running [`Embedder::embed`] inside `pool.install(..)` so embedding
/// never takes more than `threads` cores' worth of gemm work nor competes with interactive
/// requests. See the module notes for the one pool candle keeps for itself.
pub fn worker_pool(threads: usize) -> Result<rayon::ThreadPool, EmbedError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("brain-embed-{i}"))
        .start_handler(|_| {
            // On Linux the nice value is per thread: this lowers only the pool's own worker.
            // Failing leaves the thread at normal priority, which is still correct.
            let nice = rustix::process::getpriority_process(None).unwrap_or(0);
            let _ = rustix::process::setpriority_process(None, nice.max(WORKER_NICE));
        })
        .build()
        .map_err(|e| EmbedError::ThreadPool(e.to_string()))
}

/// Read and check `config.json`: a BERT encoder with absolute positions.
fn load_config(dir: &Path) -> Result<(bert::Config, Activation), EmbedError> {
    let path = dir.join("config.json");
    let text = read_required(&path)?;
    let bad = |message: String| EmbedError::BadFile {
        path: path.clone(),
        message,
    };
    let unsupported = |message: String| EmbedError::Unsupported {
        path: path.clone(),
        message,
    };
    let config: bert::Config = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if let Some(t) = config.model_type.as_deref().filter(|t| *t != "bert") {
        return Err(unsupported(format!(
            "model_type `{t}` (only `bert` encoders are supported)"
        )));
    }
    if let Some(p) = config
        .position_embedding_type
        .as_deref()
        .filter(|p| *p != "absolute")
    {
        return Err(unsupported(format!(
            "position_embedding_type `{p}` (only `absolute` is supported)"
        )));
    }
    let activation = Activation::parse(&config.hidden_act)
        .ok_or_else(|| unsupported(format!("hidden_act `{}`", config.hidden_act)))?;
    let sizes = [
        ("vocab_size", config.vocab_size),
        ("hidden_size", config.hidden_size),
        ("num_hidden_layers", config.num_hidden_layers),
        ("num_attention_heads", config.num_attention_heads),
        ("intermediate_size", config.intermediate_size),
        ("max_position_embeddings", config.max_position_embeddings),
        ("type_vocab_size", config.type_vocab_size),
    ];
    if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
        return Err(bad(format!("{name} is 0")));
    }
    if !config
        .hidden_size
        .is_multiple_of(config.num_attention_heads)
    {
        return Err(bad(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            config.hidden_size, config.num_attention_heads
        )));
    }
    Ok((config, activation))
}

/// What the optional sentence-transformers files say.
#[derive(Default)]
struct SentenceTransformers {
    pooling: Option<Pooling>,
    max_seq_length: Option<usize>,
    query_prompt: Option<String>,
    passage_prompt: Option<String>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct StConfig {
    #[serde(default)]
    prompts: std::collections::HashMap<String, String>,
}

impl SentenceTransformers {
    fn load(dir: &Path) -> Result<SentenceTransformers, EmbedError> {
        let mut st = SentenceTransformers::default();
        let modules_path = dir.join("modules.json");
        let pooling_dir = match read_optional::<Vec<Module>>(&modules_path)? {
            Some(modules) => modules
                .into_iter()
                .find(|m| m.kind.ends_with(".Pooling"))
                .map(|m| m.path),
            None => Some("1_Pooling".to_string()),
        };
        if let Some(sub) = pooling_dir {
            let path = dir.join(sub).join("config.json");
            if let Some(c) = read_optional::<PoolingConfig>(&path)? {
                st.pooling = Some(pooling_mode(&c).map_err(|message| EmbedError::Unsupported {
                    path: path.clone(),
                    message,
                })?);
            }
        }
        let path = dir.join("sentence_bert_config.json");
        if let Some(c) = read_optional::<SentenceBertConfig>(&path)? {
            if c.max_seq_length == Some(0) {
                return Err(EmbedError::BadFile {
                    path,
                    message: "max_seq_length is 0".into(),
                });
            }
            st.max_seq_length = c.max_seq_length;
        }
        let path = dir.join("config_sentence_transformers.json");
        if let Some(mut c) = read_optional::<StConfig>(&path)? {
            st.query_prompt = c.prompts.remove("query");
            st.passage_prompt = c
                .prompts
                .remove("document")
                .or_else(|| c.prompts.remove("passage"));
        }
        Ok(st)
    }
}

fn pooling_mode(c: &PoolingConfig) -> Result<Pooling, String> {
    let others = [
        ("max", c.pooling_mode_max_tokens),
        ("mean_sqrt_len", c.pooling_mode_mean_sqrt_len_tokens),
        ("weightedmean", c.pooling_mode_weightedmean_tokens),
        ("lasttoken", c.pooling_mode_lasttoken),
    ];
    if let Some((name, _)) = others.iter().find(|(_, on)| *on) {
        return Err(format!(
            "pooling mode `{name}` (only mean or cls pooling is supported)"
        ));
    }
    match (c.pooling_mode_mean_tokens, c.pooling_mode_cls_token) {
        (true, false) => Ok(Pooling::Mean),
        (false, true) => Ok(Pooling::Cls),
        (true, true) => Err("both mean and cls pooling (their concatenation)".into()),
        (false, false) => Err("no pooling mode is on".into()),
    }
}

/// Load `tokenizer.json` and make it truncate to `max_tokens` and not pad: the file's own
/// settings are for whatever exported it (all-MiniLM-L6-v2's pads everything to 128), and
/// batches are padded here, to their longest text.
fn load_tokenizer(
    path: &Path,
    max_tokens: usize,
    vocab_size: usize,
) -> Result<Tokenizer, EmbedError> {
    let bad = |message: String| EmbedError::BadFile {
        path: path.to_path_buf(),
        message,
    };
    let text = read_required(path)?;
    let mut tokenizer = Tokenizer::from_bytes(text.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let added = tokenizer
        .get_post_processor()
        .map_or(0, |p| p.added_tokens(false));
    if max_tokens <= added {
        return Err(EmbedError::InvalidOption(format!(
            "max_tokens {max_tokens} leaves no room for text beside the {added} special tokens"
        )));
    }
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            ..TruncationParams::default()
        }))
        .map_err(|e| bad(e.to_string()))?;
    let vocab = tokenizer.get_vocab(true);
    if let Some(top) = vocab
        .values()
        .max()
        .filter(|&&id| id as usize >= vocab_size)
    {
        return Err(bad(format!(
            "token id {top} is outside config.json's vocab_size {vocab_size} (tokenizer and \
             weights from different models?)"
        )));
    }
    Ok(tokenizer)
}

fn missing_weights(dir: &Path, path: PathBuf) -> EmbedError {
    let pytorch = dir.join("pytorch_model.bin");
    if pytorch.exists() {
        EmbedError::PytorchWeightsOnly {
            path,
            found: pytorch,
        }
    } else {
        EmbedError::Missing(path)
    }
}

/// Tensors out of a safetensors file, under the Hugging Face BERT names with or without the
/// `bert.` prefix that checkpoints saved from task models carry.
struct FileWeights<'a> {
    st: &'a SafeTensors<'a>,
    prefix: &'static str,
    path: &'a Path,
}

impl<'a> FileWeights<'a> {
    fn new(st: &'a SafeTensors<'a>, path: &'a Path) -> FileWeights<'a> {
        let probe = "embeddings.word_embeddings.weight";
        let prefix = if st.tensor(probe).is_err() && st.tensor(&format!("bert.{probe}")).is_ok() {
            "bert."
        } else {
            ""
        };
        FileWeights { st, prefix, path }
    }
}

impl bert::Weights for FileWeights<'_> {
    type Error = EmbedError;

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, EmbedError> {
        let full = format!("{}{name}", self.prefix);
        let bad = |message: String| EmbedError::Weights {
            path: self.path.to_path_buf(),
            message,
        };
        let view = self
            .st
            .tensor(&full)
            .map_err(|_| bad(format!("no tensor `{full}`")))?;
        if view.shape() != shape {
            return Err(bad(format!(
                "tensor `{full}` has shape {:?}, config.json implies {shape:?}",
                view.shape()
            )));
        }
        use safetensors::Dtype as St;
        if !matches!(view.dtype(), St::F32 | St::F16 | St::BF16) {
            return Err(bad(format!(
                "tensor `{full}` is {:?} (f32, f16 or bf16 expected)",
                view.dtype()
            )));
        }
        use candle_core::safetensors::Load;
        Ok(view.load(&Device::Cpu)?.to_dtype(DType::F32)?)
    }
}

/// The folder's own name, for the model id; `.` and `..` are resolved first.
fn folder_name(dir: &Path) -> String {
    let named = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    named
        .filter(|n| n != "." && n != "..")
        .or_else(|| {
            std::fs::canonicalize(dir)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_else(|| "model".into())
}

fn read_required(path: &Path) -> Result<String, EmbedError> {
    std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            EmbedError::Missing(path.to_path_buf())
        } else {
            EmbedError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// `None` when the file is absent; an error when it is there but unreadable or malformed.
fn read_optional<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, EmbedError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(EmbedError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EmbedError::BadFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}
