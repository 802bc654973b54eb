//! `brain bench search`: latency of `search.query` through the real socket of a real daemon,
//! over a generated corpus; `brain bench embed`: embedding throughput on a BEIR corpus.
//!
//! Owns corpus generation and the measuring loop. The corpus (Markdown notes of ten sections
//! each, words drawn from a Zipf-distributed synthetic vocabulary) is ingested in-process into
//! a data dir, then a daemon is started on it as a child process and queried over its socket.
//! With `--model`, each chunk gets a random unit vector stored under the model's id instead of
//! a computed one: embedding 100k chunks would take most of an hour on two cores and does not
//! change what a query costs (the query itself is embedded by the real model).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;

use crate::eval::{self, metrics::percentile};
use crate::rpc::client::Client;
use crate::search::{self, Search, models, vectors};
use crate::store::{self, Store};

pub struct SearchBench {
    pub data: Option<PathBuf>,
    pub chunks: usize,
    pub queries: usize,
    pub model: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct SearchBenchReport {
    pub chunks: u64,
    pub notes: usize,
    pub build_secs: Option<f64>,
    pub modes: Vec<ModeLatency>,
    /// The daemon's peak resident memory after the run.
    pub daemon_peak_rss_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ModeLatency {
    pub mode: String,
    pub queries: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub mean_ms: f64,
}

impl std::fmt::Display for SearchBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corpus: {} chunks in {} notes", self.chunks, self.notes)?;
        if let Some(s) = self.build_secs {
            write!(f, " (built and indexed in {s:.1} s)")?;
        }
        writeln!(f)?;
        for m in &self.modes {
            writeln!(
                f,
                "  {:<7} p50 {:>7.2} ms  p95 {:>7.2} ms  mean {:>7.2} ms  ({} queries through the socket)",
                m.mode, m.p50_ms, m.p95_ms, m.mean_ms, m.queries
            )?;
        }
        if let Some(r) = self.daemon_peak_rss_mib {
            write!(f, "  daemon peak RSS {r:.1} MiB")?;
        }
        Ok(())
    }
}

/// Ten sections of one paragraph each make ten chunks per note.
const SECTIONS: usize = 10;
const WORDS_PER_PARAGRAPH: usize = 60;
const VOCABULARY: usize = 20_000;

/// A seeded xorshift generator: the bench needs reproducible corpora, not cryptographic
/// randomness, and this keeps a dependency out of the build.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Vocabulary {
    words: Vec<String>,
    /// Cumulative Zipf weights.
    cdf: Vec<f64>,
}

impl Vocabulary {
    fn new(rng: &mut Rng) -> Vocabulary {
        const SYLLABLES: &[&str] = &[
            "ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "va", "dre", "gul", "fen", "bri",
            "sto", "qua", "zel", "mor", "tin", "ask", "ber", "col", "dun", "el", "for",
        ];
        let mut words = Vec::with_capacity(VOCABULARY);
        let mut seen = std::collections::HashSet::new();
        while words.len() < VOCABULARY {
            let n = 2 + (rng.next() % 3) as usize;
            let w: String = (0..n)
                .map(|_| SYLLABLES[(rng.next() % SYLLABLES.len() as u64) as usize])
                .collect();
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut cdf = Vec::with_capacity(VOCABULARY);
        let mut total = 0.0;
        for i in 0..VOCABULARY {
            total += 1.0 / (i as f64 + 1.0);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Vocabulary { words, cdf }
    }

    fn pick(&self, rng: &mut Rng) -> &str {
        let u = rng.unit();
        let i = self.cdf.partition_point(|c| *c < u).min(VOCABULARY - 1);
        &self.words[i]
    }

    /// A word of middling frequency, as people search for.
    fn query_word(&self, rng: &mut Rng) -> &str {
        &self.words[100 + (rng.next() % 5000) as usize]
    }
}

fn write_corpus(dir: &Path, notes: usize, vocab: &Vocabulary, rng: &mut Rng) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for n in 0..notes {
        let sub = dir.join(format!("{:03}", n / 1000));
        if n % 1000 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        let mut text = String::with_capacity(SECTIONS * WORDS_PER_PARAGRAPH * 8);
        text.push_str(&format!("# {} {}\n\n", vocab.pick(rng), vocab.pick(rng)));
        for s in 0..SECTIONS {
            text.push_str(&format!("## Part {s} {}\n\n", vocab.pick(rng)));
            for w in 0..WORDS_PER_PARAGRAPH {
                if w > 0 {
                    text.push(' ');
                }
                text.push_str(vocab.pick(rng));
            }
            text.push_str(".\n\n");
        }
        std::fs::write(sub.join(format!("note-{n:06}.md")), text)?;
    }
    Ok(())
}

pub fn search(opts: &SearchBench) -> anyhow::Result<SearchBenchReport> {
    let temp;
    let base = match &opts.data {
        Some(d) => d.clone(),
        None => {
            temp = TempDir::new()?;
            temp.0.clone()
        }
    };
    let notes_dir = base.join("notes");
    let data_dir = base.join("data");
    let notes = opts.chunks.div_ceil(SECTIONS);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let vocab = Vocabulary::new(&mut rng);

    // Build once; a reused --data dir with the same size is measured as it is.
    let marker = base.join(format!("built-{notes}"));
    let mut build_secs = None;
    let model_name = "bench-model";
    if !marker.exists() {
        let t = Instant::now();
        let _ = std::fs::remove_dir_all(&notes_dir);
        let _ = std::fs::remove_dir_all(&data_dir);
        eprintln!("generating {notes} notes in {}", notes_dir.display());
        write_corpus(&notes_dir, notes, &vocab, &mut rng)?;
        eprintln!("ingesting");
        let store = Arc::new(Store::open(&data_dir.join("brain.db"))?);
        eval::ingest_folder(&store, "bench@localhost", &notes_dir, true)?;
        eprintln!("indexing");
        let s = Search::open(
            store.clone(),
            &search::index_dir(&data_dir),
            Default::default(),
        )?;
        s.bring_up_to_date()?;
        build_secs = Some(t.elapsed().as_secs_f64());
        std::fs::write(&marker, b"")?;
    }
    if let Some(model) = &opts.model {
        let store = Store::open(&data_dir.join("brain.db"))?;
        let embedder = models::load(model)?;
        let (model_id, dim) = (embedder.model_id().to_owned(), embedder.dim());
        eprintln!("storing random unit vectors for {model_id}");
        store_random_vectors(&store, &model_id, dim, &mut rng)?;
        let dest = models::models_dir(&data_dir).join(model_name);
        if !dest.exists() {
            std::fs::create_dir_all(models::models_dir(&data_dir))?;
            std::os::unix::fs::symlink(std::fs::canonicalize(model)?, &dest)?;
        }
        store.write(|tx| store::meta_set(tx, "search.model", model_name))?;
    }

    let socket = base.join("bench.sock");
    let mut daemon = DaemonChild::start(&data_dir, &socket)?;
    let mut client = Client::connect(&socket)?;
    // Wait until the index is ready (and the model loaded, when there is one).
    let deadline = Instant::now() + Duration::from_secs(1800);
    let chunks = loop {
        let s = client.call("daemon.status", json!({}))?;
        let sr = &s["search"];
        let ready = sr["index_state"] == "ready"
            && sr["outbox_head"] == sr["index_seq"]
            && (opts.model.is_none() || sr["model_state"] == "ready");
        if ready {
            break sr["indexed_chunks"].as_u64().unwrap_or(0);
        }
        if let Some(e) = sr["model_state"]
            .as_str()
            .filter(|s| s.starts_with("error"))
        {
            bail!("the daemon could not load the model: {e}");
        }
        if Instant::now() > deadline {
            bail!("the daemon did not get ready: {s}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    let mut modes = vec!["bm25"];
    if opts.model.is_some() {
        modes.extend(["dense", "hybrid"]);
    }
    let queries: Vec<String> = (0..opts.queries + 10)
        .map(|i| {
            let n = 1 + i % 3;
            (0..n)
                .map(|_| vocab.query_word(&mut rng).to_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut out = Vec::new();
    for mode in modes {
        let mut lat = Vec::with_capacity(opts.queries);
        for (i, q) in queries.iter().enumerate() {
            let t = Instant::now();
            let r = client.call("search.query", json!({ "query": q, "mode": mode, "k": 10 }))?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if r["hits"].as_array().is_none() {
                bail!("unexpected answer: {r}");
            }
            // The first ten warm caches and are not counted.
            if i >= 10 {
                lat.push(ms);
            }
        }
        let mean = lat.iter().sum::<f64>() / lat.len().max(1) as f64;
        lat.sort_by(f64::total_cmp);
        out.push(ModeLatency {
            mode: mode.into(),
            queries: lat.len(),
            p50_ms: percentile(&lat, 0.5),
            p95_ms: percentile(&lat, 0.95),
            mean_ms: mean,
        });
    }
    let rss = daemon.peak_rss_mib();
    let _ = client.call("daemon.shutdown", json!({}));
    daemon.wait();
    Ok(SearchBenchReport {
        chunks,
        notes,
        build_secs,
        modes: out,
        daemon_peak_rss_mib: rss,
    })
}

fn store_random_vectors(
    store: &Store,
    model_id: &str,
    dim: usize,
    rng: &mut Rng,
) -> anyhow::Result<()> {
    let ids: Vec<i64> = store.read(|c| {
        c.prepare("SELECT rid FROM chunks WHERE valid_to IS NULL")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()
    })?;
    let now = crate::clock::now();
    store.write(|tx| {
        let mut ins = tx.prepare(
            "INSERT OR IGNORE INTO chunk_vectors(chunk_rid, model_id, dim, vector, content_hash, created_at)
             VALUES (?1, ?2, ?3, ?4, 'bench', ?5)",
        )?;
        for id in &ids {
            let mut v: Vec<f32> = (0..dim).map(|_| rng.unit() as f32 - 0.5).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            v.iter_mut().for_each(|x| *x /= norm);
            ins.execute(rusqlite::params![id, model_id, dim as i64, vectors::encode(&v), now])?;
        }
        Ok::<_, rusqlite::Error>(())
    })?;
    Ok(())
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("brain-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct DaemonChild(Child);

impl DaemonChild {
    fn start(data_dir: &Path, socket: &Path) -> anyhow::Result<DaemonChild> {
        let exe = std::env::current_exe().context("finding the brain binary")?;
        let config = data_dir.join("bench-config.toml");
        std::fs::write(&config, "")?;
        let child = Command::new(exe)
            .arg("daemon")
            .env("BRAIN_DATA_DIR", data_dir)
            .env("BRAIN_SOCKET", socket)
            .env("BRAIN_CONFIG", &config)
            .env("BRAIN_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("starting the daemon")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Client::connect(socket).is_err() {
            if Instant::now() > deadline {
                bail!("the daemon did not open {}", socket.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(DaemonChild(child))
    }

    fn peak_rss_mib(&self) -> Option<f64> {
        let (_, peak) = crate::memory::resident(self.0.id())?;
        Some(peak as f64 / (1024.0 * 1024.0))
    }

    fn wait(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for DaemonChild {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `brain bench embed`: passages per second through the embedder, as the background worker
/// calls it (its texts per call, its thread count), beside the rate this machine multiplies
/// matrices at.
pub struct EmbedBench {
    pub model: PathBuf,
    /// A BEIR folder (`corpus.jsonl`), whose first `texts` documents are embedded.
    pub corpus: PathBuf,
    pub texts: usize,
    pub threads: Option<usize>,
    pub precision: Option<crate::embed::Precision>,
}

#[derive(Debug, Serialize)]
pub struct EmbedBenchReport {
    pub model: String,
    pub precision: crate::embed::Precision,
    pub threads: usize,
    pub texts: usize,
    pub tokens: usize,
    pub secs: f64,
    pub texts_per_sec: f64,
    pub tokens_per_sec: f64,
    /// What the encoder must compute for these texts, padding excluded.
    pub model_gflop: f64,
    /// `model_gflop / secs`.
    pub achieved_gflops: f64,
    /// The best rate of one large matrix product on the same pool, in the precision the
    /// encoder's linear layers run in (int8 operations count like f32 ones).
    pub gemm_gflops: f64,
    /// Passages per second if every operation ran at `gemm_gflops`.
    pub limit_texts_per_sec: f64,
    /// The same two rates per second of this process's CPU time (user + system), times the
    /// threads: what the threads would reach with their cores to themselves, which a shared
    /// machine does not give the wall-clock figures.
    pub cpu_texts_per_sec: Option<f64>,
    pub cpu_gemm_gflops: Option<f64>,
}

impl std::fmt::Display for EmbedBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} ({:?}): {} passages ({} tokens) in {:.2} s on {} threads",
            self.model, self.precision, self.texts, self.tokens, self.secs, self.threads
        )?;
        writeln!(
            f,
            "  {:.1} passages/s, {:.0} tokens/s, {:.1} GFLOP/s of model work",
            self.texts_per_sec, self.tokens_per_sec, self.achieved_gflops
        )?;
        write!(
            f,
            "  gemm {:.1} GFLOP/s: limit {:.1} passages/s ({:.0}% reached)",
            self.gemm_gflops,
            self.limit_texts_per_sec,
            100.0 * self.texts_per_sec / self.limit_texts_per_sec
        )?;
        if let (Some(t), Some(g)) = (self.cpu_texts_per_sec, self.cpu_gemm_gflops) {
            let limit = g / (self.model_gflop / self.texts as f64);
            write!(
                f,
                "\n  by CPU time, {} cores to itself: {t:.1} passages/s; gemm {g:.1} GFLOP/s, \
                 limit {limit:.1} passages/s ({:.0}% reached)",
                self.threads,
                100.0 * t / limit
            )?;
        }
        Ok(())
    }
}

/// This process's CPU time so far (user + system) from `/proc/self/stat`, in seconds; `None`
/// where there is no such file. Ticks are 1/100 s on Linux.
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The product the GEMM rate is measured on: a batch of 2,048 tokens through the feed-forward
/// layer of a 384-wide model, the shape that dominates MiniLM-class encoders.
const GEMM_SHAPE: (usize, usize, usize) = (2048, 384, 1536);
/// Repetitions of [`GEMM_SHAPE`]; the best one counts, as the bench wants the machine's rate
/// (and enough of them that their CPU time is well above the 10 ms tick it is counted in).
const GEMM_ROUNDS: usize = 100;

pub fn embed(opts: &EmbedBench) -> anyhow::Result<EmbedBenchReport> {
    #[derive(serde::Deserialize)]
    struct Doc {
        #[serde(default)]
        title: String,
        text: String,
    }
    let docs: Vec<Doc> = eval::read_jsonl(&opts.corpus.join("corpus.jsonl"))?;
    // As ingest stores a document and the worker then embeds it: title line, then body.
    let texts: Vec<String> = docs
        .iter()
        .take(opts.texts)
        .map(|d| search::embed_text(&d.title, None, &d.text))
        .collect();
    if texts.is_empty() {
        bail!("{} has no documents", opts.corpus.display());
    }
    let embedder = crate::embed::Embedder::load_with(
        &opts.model,
        &crate::embed::LoadOptions {
            precision: opts.precision,
            ..Default::default()
        },
    )?;
    let threads = opts.threads.unwrap_or_else(crate::embed::worker_threads);
    // At the process's own priority, not the background pool's nice 19: the bench measures
    // the engine, and on a shared machine a niced pool measures the other load instead.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the bench pool: {e}"))?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let lens = embedder.passage_tokens(&refs)?;
    let model_gflop = lens.iter().map(|&n| embedder.flops(n)).sum::<f64>() / 1e9;

    let (gemm_gflops, cpu_gemm_gflops) =
        pool.install(|| -> anyhow::Result<(f64, Option<f64>)> {
            let (m, k, n) = GEMM_SHAPE;
            let product = crate::embed::Product::new(embedder.precision(), m, k, n)?;
            let mut best = f64::MAX;
            let cpu = cpu_secs();
            for _ in 0..GEMM_ROUNDS {
                let t = Instant::now();
                product.run()?;
                best = best.min(t.elapsed().as_secs_f64());
            }
            let flop = 2.0 * (m * k * n) as f64;
            let cpu = cpu.zip(cpu_secs()).map(|(a, b)| b - a).filter(|&s| s > 0.0);
            Ok((
                flop / best / 1e9,
                cpu.map(|s| flop * GEMM_ROUNDS as f64 / s / 1e9 * threads as f64),
            ))
        })?;

    let t = Instant::now();
    let cpu = cpu_secs();
    pool.install(|| -> anyhow::Result<()> {
        for call in refs.chunks(search::EMBED_BATCH) {
            embedder.embed_passages(call)?;
        }
        Ok(())
    })?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu.zip(cpu_secs()).map(|(a, b)| b - a).filter(|&s| s > 0.0);
    let tokens: usize = lens.iter().sum();
    let per_text_gflop = model_gflop / texts.len() as f64;
    Ok(EmbedBenchReport {
        model: embedder.model_id().to_owned(),
        precision: embedder.precision(),
        threads,
        texts: texts.len(),
        tokens,
        secs,
        texts_per_sec: texts.len() as f64 / secs,
        tokens_per_sec: tokens as f64 / secs,
        model_gflop,
        achieved_gflops: model_gflop / secs,
        gemm_gflops,
        limit_texts_per_sec: gemm_gflops / per_text_gflop,
        cpu_texts_per_sec: cpu.map(|c| texts.len() as f64 / c * threads as f64),
        cpu_gemm_gflops,
    })
}
