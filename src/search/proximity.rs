//! Graph proximity: the notes around the best hits of a query, found by one SQL query over the
//! indexed edges (links either way, and tags few notes share), ranked by how close they are to
//! how good a hit. Knows nothing of fusion: it hands back a ranked list.

use rusqlite::{Connection, params};

/// Notes the best hits are seeds of: the neighbourhood of the first ten is where a linked
/// answer sits; further down the list the hits are weak and their links weaker.
pub const SEEDS: usize = 10;
/// Neighbours kept, best first: more than a page of hits, so the fusion can choose.
pub const MAX_NEIGHBOURS: usize = 50;
/// A tag on more notes than this relates none of them to another (`seedling` on thousands of
/// hub notes); it is skipped, which also bounds the rows one seed can bring.
pub const MAX_TAG_NOTES: i64 = 50;

/// One SQL statement: for seed notes (best first), every current note linked from or to a seed,
/// or sharing with it a tag on at most [`MAX_TAG_NOTES`] notes, scored by the sum over the seeds
/// it touches of `1 / (rrf_k + seed rank)` — next to the best hit counts most. Seeds themselves
/// are neighbours when another seed links them. Every step is an index lookup: `edges_current`
/// by source, `edges_dst` by target and type, nodes by id.
const NEIGHBOURS_SQL: &str = "
WITH seeds(id, rank) AS (SELECT value, key + 1 FROM json_each(?1)),
near(other, rank) AS (
    SELECT e.dst_id, s.rank FROM seeds s
      JOIN edges e ON e.src_id = s.id AND e.type = 'links_to' AND e.valid_to IS NULL
    UNION
    SELECT e.src_id, s.rank FROM seeds s
      JOIN edges e ON e.dst_id = s.id AND e.type = 'links_to' AND e.valid_to IS NULL
    UNION
    SELECT o.src_id, t.rank FROM small_tags t
      JOIN edges o ON o.dst_id = t.tag AND o.type = 'tagged' AND o.valid_to IS NULL
),
-- Counting stops one past the cap: a tag on thousands of notes costs no more than a small one.
small_tags(tag, rank) AS (
    SELECT t.dst_id, s.rank FROM seeds s
      JOIN edges t ON t.src_id = s.id AND t.type = 'tagged' AND t.valid_to IS NULL
     WHERE (SELECT count(*) FROM (SELECT 1 FROM edges x
             WHERE x.dst_id = t.dst_id AND x.type = 'tagged' AND x.valid_to IS NULL
             LIMIT ?3 + 1)) <= ?3
)
SELECT n.other, sum(1.0 / (?2 + n.rank)) AS closeness
  FROM near n
  JOIN seeds s ON s.rank = n.rank
  JOIN nodes o ON o.id = n.other AND o.kind = 'note' AND o.valid_to IS NULL
 WHERE n.other <> s.id
 GROUP BY n.other
 ORDER BY closeness DESC, n.other
 LIMIT ?4";

/// The notes near `seeds` (note ids, best first), closest first, with their closeness.
pub fn neighbours(
    conn: &Connection,
    seeds: &[String],
    rrf_k: f32,
) -> rusqlite::Result<Vec<(String, f32)>> {
    let seeds = serde_json::to_string(seeds).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(NEIGHBOURS_SQL)?;
    let rows = stmt.query_map(
        params![
            seeds,
            f64::from(rrf_k),
            MAX_TAG_NOTES,
            MAX_NEIGHBOURS as i64
        ],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)? as f32)),
    )?;
    rows.collect()
}
