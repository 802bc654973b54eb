//! The English analyzer of every text field and every query: Unicode word splitting, lower
//! case, accents folded, stop words dropped (`stopwords`), Snowball stemming.
//!
//! Owns only the token pipeline; what is indexed lives in `index`. The chain is one statically
//! typed tokenizer (a virtual call per token at most, not one per filter per token), and
//! stems are remembered per analyzer: a folder repeats a small vocabulary many times over, and
//! the Snowball algorithm costs more than a hash lookup. Both give exactly the tokens of the
//! plain chain (`tests::same_tokens_as_the_plain_chain`).

use rustc_hash::FxHashMap;
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, StopWordFilter,
    TextAnalyzer, Token, TokenFilter, TokenStream, Tokenizer,
};

/// The name the analyzer is registered under in the index schema.
pub const NAME: &str = "brain_en";
/// Words longer than this many bytes are dropped: base64, hashes and URLs glued into one
/// token say nothing a query would ask, and bloat the term dictionary.
const MAX_TOKEN_BYTES: usize = 40;
/// Distinct words whose stems one analyzer remembers before it starts over: a few MiB at most
/// per analyzer (the index writer holds one per text field), while the words a folder repeats
/// stay remembered between restarts of the cache.
const MAX_CACHED_STEMS: usize = 1 << 15;

/// The analyzer, ready to register or to run over a query.
pub fn english() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(StopWordFilter::remove(
            super::stopwords::ENGLISH.iter().map(|w| (*w).to_owned()),
        ))
        .filter(CachedStemmer)
        .build()
}

/// Snowball English stemming, with each analyzer remembering the stems it computed.
#[derive(Clone, Copy)]
pub struct CachedStemmer;

impl TokenFilter for CachedStemmer {
    type Tokenizer<T: Tokenizer> = CachedStemmerFilter<T>;

    fn transform<T: Tokenizer>(self, inner: T) -> CachedStemmerFilter<T> {
        CachedStemmerFilter {
            inner,
            stems: Stems::default(),
        }
    }
}

#[derive(Clone)]
pub struct CachedStemmerFilter<T> {
    inner: T,
    stems: Stems,
}

impl<T: Tokenizer> Tokenizer for CachedStemmerFilter<T> {
    type TokenStream<'a> = CachedStemmerStream<'a, T::TokenStream<'a>>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> Self::TokenStream<'a> {
        CachedStemmerStream {
            tail: self.inner.token_stream(text),
            stems: &mut self.stems,
        }
    }
}

/// Word → stem, bounded by [`MAX_CACHED_STEMS`]. Each clone of an analyzer (tantivy takes one
/// per field and segment from the unused one registered) keeps its own.
#[derive(Clone)]
struct Stems {
    stemmer: frostem::Stemmer,
    known: FxHashMap<Box<str>, Box<str>>,
}

impl Default for Stems {
    fn default() -> Stems {
        Stems {
            stemmer: frostem::Stemmer::new(frostem::Algorithm::English),
            known: FxHashMap::default(),
        }
    }
}

impl Stems {
    /// Replaces `word` by its stem in place.
    fn stem(&mut self, word: &mut String) {
        if let Some(stem) = self.known.get(word.as_str()) {
            if **stem != **word {
                word.clear();
                word.push_str(stem);
            }
            return;
        }
        let stem: Box<str> = self.stemmer.stem(word).into();
        if self.known.len() >= MAX_CACHED_STEMS {
            self.known.clear();
        }
        self.known.insert(word.as_str().into(), stem.clone());
        if *stem != **word {
            word.clear();
            word.push_str(&stem);
        }
    }
}

pub struct CachedStemmerStream<'a, T> {
    tail: T,
    stems: &'a mut Stems,
}

impl<T: TokenStream> TokenStream for CachedStemmerStream<'_, T> {
    fn advance(&mut self) -> bool {
        if !self.tail.advance() {
            return false;
        }
        self.stems.stem(&mut self.tail.token_mut().text);
        true
    }

    fn token(&self) -> &Token {
        self.tail.token()
    }

    fn token_mut(&mut self) -> &mut Token {
        self.tail.token_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::tokenizer::{Language, Stemmer};

    /// The chain as tantivy's own filters build it, one boxed filter after another: the
    /// reference the analyzer must agree with token for token.
    fn plain_chain() -> TextAnalyzer {
        let b = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter)
            .dynamic();
        b.filter_dynamic(StopWordFilter::remove(
            super::super::stopwords::ENGLISH
                .iter()
                .map(|w| (*w).to_owned()),
        ))
        .filter_dynamic(Stemmer::new(Language::English))
        .build()
    }

    fn tokens(a: &mut TextAnalyzer, text: &str) -> Vec<(String, usize, usize, usize)> {
        let mut out = Vec::new();
        let mut s = a.token_stream(text);
        while let Some(t) = s.next() {
            out.push((t.text.clone(), t.position, t.offset_from, t.offset_to));
        }
        out
    }

    #[test]
    fn same_tokens_as_the_plain_chain() {
        // Real text: every note of the fixture vault, run through one analyzer in turn as the
        // index writer does (the stem cache warm from the notes before).
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vault");
        let mut texts = Vec::new();
        let mut dirs = vec![root];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if let Ok(t) = std::fs::read_to_string(&p) {
                    texts.push(t);
                }
            }
        }
        texts.push("Ünïcödé naïve café résumés CAFÉS Running runs ran runner's".into());
        texts.push("the THE How do I water tomatoes? Organizations organized organizing".into());
        texts.push(format!("{} short words {}", "x".repeat(41), "y".repeat(40)));
        assert!(texts.len() > 10, "the fixture vault was not found");
        let (mut ours, mut plain) = (english(), plain_chain());
        let mut n = 0;
        for _ in 0..2 {
            for t in &texts {
                let want = tokens(&mut plain, t);
                assert_eq!(tokens(&mut ours, t), want);
                n += want.len();
            }
        }
        assert!(n > 1000, "too little text compared: {n} tokens");
    }

    #[test]
    fn the_cache_starts_over_when_full_and_stays_right() {
        let mut ours = english();
        let mut plain = plain_chain();
        let words: Vec<String> = (0..MAX_CACHED_STEMS + 100)
            .map(|i| format!("walking{i}s running"))
            .collect();
        let text = words.join(" ");
        assert_eq!(tokens(&mut ours, &text), tokens(&mut plain, &text));
    }
}
