//! Ranking metrics as BEIR and trec_eval define them, over one query's ranked document ids
//! and its judgements (document id → graded relevance, relevant ones only).

use std::collections::{HashMap, HashSet};

pub fn ndcg_at(ranked: &[&str], judged: &HashMap<String, u32>, k: usize) -> f64 {
    let gain = |rel: u32| f64::from(rel);
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| {
            judged
                .get(*d)
                .map_or(0.0, |r| gain(*r) / (i as f64 + 2.0).log2())
        })
        .sum();
    let mut ideal: Vec<u32> = judged.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, r)| gain(*r) / (i as f64 + 2.0).log2())
        .sum();
    if idcg == 0.0 { 0.0 } else { dcg / idcg }
}

pub fn recall_at(ranked: &[&str], judged: &HashMap<String, u32>, k: usize) -> f64 {
    if judged.is_empty() {
        return 0.0;
    }
    let found: HashSet<&str> = ranked
        .iter()
        .take(k)
        .filter(|d| judged.contains_key(**d))
        .copied()
        .collect();
    found.len() as f64 / judged.len() as f64
}

pub fn mrr_at(ranked: &[&str], judged: &HashMap<String, u32>, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| judged.contains_key(*d))
        .map_or(0.0, |i| 1.0 / (i as f64 + 1.0))
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// 1 when the first result is relevant: what a user who reads only the top hit gets.
pub fn success_at_1(ranked: &[&str], judged: &HashMap<String, u32>) -> f64 {
    ranked
        .first()
        .map_or(0.0, |d| f64::from(u8::from(judged.contains_key(*d))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, u32)]) -> HashMap<String, u32> {
        pairs.iter().map(|(d, r)| (d.to_string(), *r)).collect()
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let j = judged(&[("a", 1), ("b", 1)]);
        // Perfect ranking.
        assert!((ndcg_at(&["a", "b", "x"], &j, 10) - 1.0).abs() < 1e-12);
        // One relevant at rank 2: DCG = 1/log2(3); IDCG = 1 + 1/log2(3).
        let expect = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at(&["x", "a"], &j, 10) - expect).abs() < 1e-12);
        assert_eq!(recall_at(&["x", "a"], &j, 100), 0.5);
        assert_eq!(mrr_at(&["x", "a"], &j, 10), 0.5);
        assert_eq!(mrr_at(&["x"], &j, 10), 0.0);
        assert_eq!(success_at_1(&["a", "x"], &j), 1.0);
        assert_eq!(success_at_1(&["x", "a"], &j), 0.0);
        assert_eq!(success_at_1(&[], &j), 0.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), 3.0);
    }
}
