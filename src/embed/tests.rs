//! Tests of the embedder against the tiny random-weight model from `tiny.rs`, and a check
//! against a real model folder named by `BRAIN_TEST_MODEL` (skipped, saying so, without one).
//! Throughput is measured by `brain eval beir --mode dense`, not here.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::tiny::{self, MAX_SEQ_LENGTH, TOKENIZER_FILE_MAX_LENGTH};
use super::*;

/// A fresh tiny model in a temp dir, in a folder named `tiny-bert`.
fn tiny_model(seed: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-bert");
    tiny::write_tiny_bert(&dir, seed).unwrap();
    (tmp, dir)
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn words(n: usize) -> String {
    let w = [
        "cat", "dog", "graph", "note", "the", "brain", "search", "link",
    ];
    (0..n).map(|i| w[i % w.len()]).collect::<Vec<_>>().join(" ")
}

const TEXTS: &[&str] = &[
    "the cat sat on the mat",
    "",
    "hello world",
    "The QUICK brown fox jumps over the lazy dog!",
    "graph",
    "a note, with (punctuation): and digits 42; ok?",
    "unknown scripts 日本語 and ümlauts become [UNK]",
    "brain brain brain brain brain brain brain brain brain brain brain brain brain",
];

#[test]
fn loads_the_tiny_model() {
    let (_tmp, dir) = tiny_model(7);
    let e = Embedder::load(&dir).unwrap();
    assert_eq!(e.dim(), tiny::HIDDEN);
    assert_eq!(e.max_tokens(), MAX_SEQ_LENGTH);
    assert_eq!(e.pooling(), Pooling::Mean);
    let (name, hash) = e.model_id().split_once('@').unwrap();
    assert_eq!(name, "tiny-bert");
    assert_eq!(hash.len(), 12);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    assert_eq!(e.query_prefix(), "");
    assert!(format!("{e:?}").contains("tiny-bert@"));
}

#[test]
fn vectors_have_the_model_dim_and_unit_length() {
    let (_tmp, dir) = tiny_model(7);
    let e = Embedder::load(&dir).unwrap();
    let vs = e.embed(TEXTS).unwrap();
    assert_eq!(vs.len(), TEXTS.len());
    for (t, v) in TEXTS.iter().zip(&vs) {
        assert_eq!(v.len(), e.dim(), "{t:?}");
        assert!(v.iter().all(|x| x.is_finite()), "{t:?}");
        let norm = dot(v, v).sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{t:?}: norm {norm}");
    }
    // Different texts, different vectors (the weights are random, not degenerate).
    assert!(dot(&vs[0], &vs[2]) < 0.9999);
}

#[test]
fn a_batch_gives_the_same_vectors_as_one_text_at_a_time() {
    let (_tmp, dir) = tiny_model(7);
    let e = Embedder::load(&dir).unwrap();
    let long = words(200);
    let mut texts: Vec<&str> = TEXTS.to_vec();
    texts.push(&long);
    texts.push(TEXTS[0]); // a duplicate in the same batch
    let batched = e.embed(&texts).unwrap();
    let single: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| e.embed(&[t]).unwrap().remove(0))
        .collect();
    let d = max_diff(&batched, &single);
    assert!(d < 1e-5, "batched and single differ by {d}");
    // And the order of the batch does not matter.
    let mut reversed = texts.clone();
    reversed.reverse();
    let mut back = e.embed(&reversed).unwrap();
    back.reverse();
    assert!(max_diff(&batched, &back) < 1e-5);
}

#[test]
fn batches_larger_than_one_forward_pass_keep_their_order() {
    let (_tmp, dir) = tiny_model(7);
    let e = Embedder::load(&dir).unwrap();
    // More texts than BATCH_TEXTS, of mixed lengths, so `embed` splits and sorts them.
    let owned: Vec<String> = (0..(BATCH_TEXTS * 2 + 5))
        .map(|i| words(1 + (i * 7) % 40))
        .collect();
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let all = e.embed(&texts).unwrap();
    for (i, t) in texts.iter().enumerate().step_by(17) {
        let one = e.embed(&[t]).unwrap();
        assert!(max_diff(&all[i..=i], &one) < 1e-5, "text {i}");
    }
}

#[test]
fn long_texts_are_truncated_to_max_tokens() {
    let (_tmp, dir) = tiny_model(7);
    let e = Embedder::load(&dir).unwrap();
    // Every word is one token, so [CLS] + 30 words + [SEP] fills the 32 tokens.
    let kept = MAX_SEQ_LENGTH - 2;
    let long = words(5000);
    let vs = e
        .embed(&[&long, &words(kept), &words(TOKENIZER_FILE_MAX_LENGTH - 2)])
        .unwrap();
    assert!(
        max_diff(&vs[0..1], &vs[1..2]) < 1e-5,
        "a long text is its first {kept} words"
    );
    // The tokenizer file's own, shorter limit is not the one applied.
    assert!(max_diff(&vs[1..2], &vs[2..3]) > 1e-3);
}

#[test]
fn empty_input_and_empty_strings() {
    let (_tmp, dir) = tiny_model(7);
    let e = Embedder::load(&dir).unwrap();
    assert!(e.embed(&[]).unwrap().is_empty());
    let v = e.embed(&["", "   ", "\n\t"]).unwrap();
    assert_eq!(v.len(), 3);
    // Blank text is [CLS] [SEP] after normalization, like the empty string.
    assert!(max_diff(&v[0..1], &v[1..2]) < 1e-6);
    assert!((dot(&v[0], &v[0]).sqrt() - 1.0).abs() < 1e-5);
}

#[test]
fn deterministic_across_calls_and_loads() {
    let (_tmp, dir) = tiny_model(7);
    let a = Embedder::load(&dir).unwrap();
    let b = Embedder::load(&dir).unwrap();
    assert_eq!(a.model_id(), b.model_id());
    let first = a.embed(TEXTS).unwrap();
    assert_eq!(first, a.embed(TEXTS).unwrap());
    assert_eq!(first, b.embed(TEXTS).unwrap());
    // The same generator seed writes the same weights, hence the same id.
    let (_tmp2, same) = tiny_model(7);
    assert_eq!(Embedder::load(&same).unwrap().model_id(), a.model_id());
    let (_tmp3, other) = tiny_model(8);
    let c = Embedder::load(&other).unwrap();
    assert_ne!(c.model_id(), a.model_id());
    assert!(max_diff(&first, &c.embed(TEXTS).unwrap()) > 1e-3);
}

#[test]
fn weights_under_a_bert_prefix_load_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    let prefixed = tmp.path().join("prefixed");
    tiny::write_tiny_bert(&plain, 3).unwrap();
    tiny::write_tiny_bert_with_prefix(&prefixed, 3, "bert.").unwrap();
    let a = Embedder::load(&plain).unwrap().embed(TEXTS).unwrap();
    let b = Embedder::load(&prefixed).unwrap().embed(TEXTS).unwrap();
    assert_eq!(a, b);
}

#[test]
fn pooling_comes_from_the_folder_or_the_options() {
    let (_tmp, dir) = tiny_model(7);
    let mean = Embedder::load(&dir).unwrap();
    write(
        &dir.join("1_Pooling/config.json"),
        &json!({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}).to_string(),
    );
    let cls = Embedder::load(&dir).unwrap();
    assert_eq!(cls.pooling(), Pooling::Cls);
    assert!(max_diff(&mean.embed(TEXTS).unwrap(), &cls.embed(TEXTS).unwrap()) > 1e-3);
    // Overriding back to mean reproduces the mean vectors, under a distinct id.
    let opts = LoadOptions {
        pooling: Some(Pooling::Mean),
        ..LoadOptions::default()
    };
    let again = Embedder::load_with(&dir, &opts).unwrap();
    assert_eq!(again.embed(TEXTS).unwrap(), mean.embed(TEXTS).unwrap());
    assert_eq!(again.model_id(), format!("{}+mean", cls.model_id()));
}

#[test]
fn without_sentence_transformers_files_it_mean_pools_over_all_positions() {
    let (_tmp, dir) = tiny_model(7);
    for f in ["modules.json", "sentence_bert_config.json"] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    std::fs::remove_dir_all(dir.join("1_Pooling")).unwrap();
    let e = Embedder::load(&dir).unwrap();
    assert_eq!(e.pooling(), Pooling::Mean);
    assert_eq!(e.max_tokens(), tiny::MAX_POSITIONS);
    assert_eq!(e.embed(&[&words(1000)]).unwrap()[0].len(), tiny::HIDDEN);
}

#[test]
fn a_folder_asking_for_more_tokens_than_positions_gets_the_positions() {
    let (_tmp, dir) = tiny_model(7);
    write(
        &dir.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 4096}"#,
    );
    assert_eq!(
        Embedder::load(&dir).unwrap().max_tokens(),
        tiny::MAX_POSITIONS
    );
}

#[test]
fn max_tokens_option_truncates_and_marks_the_id() {
    let (_tmp, dir) = tiny_model(7);
    let base = Embedder::load(&dir).unwrap();
    let opts = LoadOptions {
        max_tokens: Some(8),
        ..LoadOptions::default()
    };
    let short = Embedder::load_with(&dir, &opts).unwrap();
    assert_eq!(short.max_tokens(), 8);
    assert_eq!(short.model_id(), format!("{}+t8", base.model_id()));
    let v = short.embed(&[&words(100), &words(6)]).unwrap();
    assert!(max_diff(&v[0..1], &v[1..2]) < 1e-5);
}

#[test]
fn prompts_come_from_the_folder_or_the_options() {
    let (_tmp, dir) = tiny_model(7);
    write(
        &dir.join("config_sentence_transformers.json"),
        &json!({"prompts": {"query": "query: ", "document": "passage: "}}).to_string(),
    );
    let e = Embedder::load(&dir).unwrap();
    assert_eq!(e.query_prefix(), "query: ");
    assert_eq!(e.passage_prefix(), "passage: ");
    let q = e.embed_queries(&["the cat"]).unwrap();
    assert_eq!(q, e.embed(&["query: the cat"]).unwrap());
    let p = e.embed_passages(&["the cat"]).unwrap();
    assert_eq!(p, e.embed(&["passage: the cat"]).unwrap());

    let opts = LoadOptions {
        query_prefix: Some("search: ".into()),
        ..LoadOptions::default()
    };
    let e = Embedder::load_with(&dir, &opts).unwrap();
    assert_eq!(e.query_prefix(), "search: ");
    assert_eq!(e.passage_prefix(), "passage: ");
}

#[test]
fn embedding_inside_a_worker_pool_gives_the_same_vectors_at_low_priority() {
    let (_tmp, dir) = tiny_model(7);
    let e = Embedder::load(&dir).unwrap();
    let outside = e.embed(TEXTS).unwrap();
    let pool = worker_pool(2).unwrap();
    let (inside, nice) = pool.install(|| {
        let nice = rustix::process::getpriority_process(None).unwrap();
        (e.embed(TEXTS).unwrap(), nice)
    });
    assert!(max_diff(&outside, &inside) < 1e-5);
    assert!(nice >= WORKER_NICE, "worker nice {nice}");
}

#[test]
fn one_embedder_serves_many_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Embedder>();
    let (_tmp, dir) = tiny_model(7);
    let e = Embedder::load(&dir).unwrap();
    let expected = e.embed(TEXTS).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| e.embed(TEXTS).unwrap()))
            .collect();
        for h in handles {
            assert!(max_diff(&expected, &h.join().unwrap()) < 1e-5);
        }
    });
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Write a tiny model, spoil it with `spoil`, and expect loading to fail with a message
/// containing every one of `expected` (`{dir}` stands for the model folder).
fn check_error(spoil: impl FnOnce(&Path), options: LoadOptions, expected: &[&str]) {
    let (_tmp, dir) = tiny_model(7);
    spoil(&dir);
    let err = Embedder::load_with(&dir, &options).unwrap_err().to_string();
    for e in expected {
        let e = e.replace("{dir}", &dir.display().to_string());
        assert!(err.contains(&e), "error {err:?} does not mention {e:?}");
    }
}

fn no_options() -> LoadOptions {
    LoadOptions::default()
}

fn remove(name: &'static str) -> impl FnOnce(&Path) {
    move |dir| std::fs::remove_file(dir.join(name)).unwrap()
}

fn overwrite(name: &'static str, text: &'static str) -> impl FnOnce(&Path) {
    move |dir| write(&dir.join(name), text)
}

fn patch_config(patch: serde_json::Value) -> impl FnOnce(&Path) {
    move |dir| {
        let mut config = tiny::config();
        for (k, v) in patch.as_object().unwrap() {
            config[k] = v.clone();
        }
        write(&dir.join("config.json"), &config.to_string());
    }
}

/// Rewrite the weights with `change` applied to the list of tensors.
fn patch_weights(change: impl FnOnce(&mut Vec<tiny::TinyTensor>)) -> impl FnOnce(&Path) {
    move |dir| {
        let mut tensors = tiny::weights(7);
        change(&mut tensors);
        tiny::write_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
    }
}

#[test]
fn missing_files_are_named() {
    check_error(
        remove("config.json"),
        no_options(),
        &["model file {dir}/config.json is missing"],
    );
    check_error(
        remove("tokenizer.json"),
        no_options(),
        &["model file {dir}/tokenizer.json is missing"],
    );
    check_error(
        remove("model.safetensors"),
        no_options(),
        &["model file {dir}/model.safetensors is missing"],
    );
    check_error(
        |dir| {
            std::fs::rename(dir.join("model.safetensors"), dir.join("pytorch_model.bin")).unwrap()
        },
        no_options(),
        &[
            "only safetensors weights are supported",
            "pytorch_model.bin",
        ],
    );
    let err = Embedder::load(Path::new("/nonexistent/model")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model folder /nonexistent/model does not exist or is not a folder"
    );
}

#[test]
fn bad_config_files_are_named() {
    check_error(
        overwrite("config.json", "{not json"),
        no_options(),
        &["bad {dir}/config.json: key must be a string"],
    );
    check_error(
        overwrite("config.json", r#"{"hidden_size": 32}"#),
        no_options(),
        &["bad {dir}/config.json: missing field `vocab_size`"],
    );
    check_error(
        patch_config(json!({"num_attention_heads": 3})),
        no_options(),
        &["hidden_size 32 is not a multiple of num_attention_heads 3"],
    );
    check_error(
        patch_config(json!({"num_attention_heads": 0})),
        no_options(),
        &["num_attention_heads is 0"],
    );
    check_error(
        patch_config(json!({"model_type": "xlm-roberta"})),
        no_options(),
        &["unsupported model in {dir}/config.json: model_type `xlm-roberta`"],
    );
    check_error(
        patch_config(json!({"position_embedding_type": "relative_key"})),
        no_options(),
        &["position_embedding_type `relative_key`"],
    );
    check_error(
        patch_config(json!({"hidden_act": "swish"})),
        no_options(),
        &["hidden_act `swish`"],
    );
    check_error(
        patch_config(json!({"vocab_size": 50})),
        no_options(),
        &["bad {dir}/tokenizer.json: token id", "vocab_size 50"],
    );
    check_error(
        overwrite("tokenizer.json", r#"{"model": {"type": "Nope"}}"#),
        no_options(),
        &["bad {dir}/tokenizer.json"],
    );
    check_error(
        overwrite("modules.json", "[{]"),
        no_options(),
        &["bad {dir}/modules.json"],
    );
    check_error(
        overwrite(
            "1_Pooling/config.json",
            r#"{"pooling_mode_max_tokens": true}"#,
        ),
        no_options(),
        &["unsupported model in {dir}/1_Pooling/config.json: pooling mode `max`"],
    );
    check_error(
        overwrite("sentence_bert_config.json", r#"{"max_seq_length": 0}"#),
        no_options(),
        &["max_seq_length is 0"],
    );
}

#[test]
fn bad_weights_are_named() {
    check_error(
        patch_weights(|ts| {
            let t = ts
                .iter_mut()
                .find(|t| t.name == "encoder.layer.0.attention.self.query.weight")
                .unwrap();
            t.shape = vec![32, 16];
            t.values.truncate(32 * 16);
        }),
        no_options(),
        &[
            "bad weights in {dir}/model.safetensors",
            "tensor `encoder.layer.0.attention.self.query.weight` has shape [32, 16], config.json implies [32, 32]",
        ],
    );
    check_error(
        patch_weights(|ts| ts.retain(|t| t.name != "encoder.layer.1.output.LayerNorm.bias")),
        no_options(),
        &["no tensor `encoder.layer.1.output.LayerNorm.bias`"],
    );
    check_error(
        patch_config(json!({"num_hidden_layers": 3})),
        no_options(),
        &["no tensor `encoder.layer.2.attention.self.query.weight`"],
    );
    check_error(
        overwrite("model.safetensors", "not a safetensors file"),
        no_options(),
        &["bad weights in {dir}/model.safetensors"],
    );
}

#[test]
fn bad_options_are_refused() {
    let opts = |n| LoadOptions {
        max_tokens: Some(n),
        ..LoadOptions::default()
    };
    check_error(
        |_| {},
        opts(65),
        &["max_tokens 65 is more than the model's 64"],
    );
    check_error(|_| {}, opts(2), &["max_tokens 2 leaves no room"]);
    check_error(|_| {}, opts(0), &["max_tokens 0 leaves no room"]);
}

#[test]
fn int8_vectors_agree_with_f32_where_the_cpu_has_the_kernel() {
    let (_tmp, dir) = tiny_model(11);
    let load = |precision| {
        Embedder::load_with(
            &dir,
            &LoadOptions {
                precision: Some(precision),
                ..no_options()
            },
        )
    };
    let f32s = load(Precision::F32).unwrap();
    assert_eq!(f32s.precision(), Precision::F32);
    if !int8::supported() {
        let err = load(Precision::Int8).unwrap_err().to_string();
        assert!(err.contains("AVX-512 VNNI"), "{err}");
        assert_eq!(Embedder::load(&dir).unwrap().precision(), Precision::F32);
        return;
    }
    let int8s = load(Precision::Int8).unwrap();
    assert_eq!(int8s.precision(), Precision::Int8);
    assert_eq!(Embedder::load(&dir).unwrap().precision(), Precision::Int8);
    assert_eq!(int8s.model_id(), f32s.model_id());
    let long = words(40);
    let mut texts = TEXTS.to_vec();
    texts.push(&long);
    let a = f32s.embed(&texts).unwrap();
    let b = int8s.embed(&texts).unwrap();
    for ((x, y), t) in a.iter().zip(&b).zip(&texts) {
        let cos = dot(x, y);
        assert!(cos > 0.99, "cosine {cos} for {t:?}");
    }
}

/// The real model folder named by `BRAIN_TEST_MODEL` (e.g. all-MiniLM-L6-v2), if any. Models
/// are never downloaded, so without one the real-model check says it is skipped.
fn real_model() -> Option<Embedder> {
    let Some(dir) = std::env::var_os("BRAIN_TEST_MODEL") else {
        eprintln!("SKIPPED: set BRAIN_TEST_MODEL to a model folder to check a real model");
        return None;
    };
    Some(Embedder::load(Path::new(&dir)).unwrap())
}

/// With a real model: paraphrases score above unrelated pairs.
/// `BRAIN_TEST_MODEL=DIR cargo test --release --locked embed_quality -- --nocapture`
#[test]
fn embed_quality_real_model() {
    let Some(e) = real_model() else { return };
    let pairs = [
        (
            "A man is playing a guitar.",
            "Someone plays an acoustic guitar.",
        ),
        (
            "The cat sits outside on the mat.",
            "A cat is sitting outdoors on a rug.",
        ),
        (
            "How do I reset my password?",
            "What are the steps to change a forgotten password?",
        ),
        (
            "Vitamin D deficiency is linked to bone loss.",
            "Low vitamin D levels are associated with weaker bones.",
        ),
    ];
    let mut paraphrase = Vec::new();
    let mut unrelated = Vec::new();
    for (i, (a, b)) in pairs.iter().enumerate() {
        let v = e.embed(&[a, b, pairs[(i + 1) % pairs.len()].1]).unwrap();
        paraphrase.push(dot(&v[0], &v[1]));
        unrelated.push(dot(&v[0], &v[2]));
        println!(
            "{:.4} paraphrase / {:.4} unrelated: {a:?}",
            paraphrase[i], unrelated[i]
        );
    }
    let worst = paraphrase.iter().copied().fold(f32::MAX, f32::min);
    let best = unrelated.iter().copied().fold(f32::MIN, f32::max);
    assert!(
        worst > best,
        "a paraphrase scored {worst}, an unrelated pair {best}"
    );
}
