//! An exact in-memory copy of the embedded store's policy vectors, for KNN.
//!
//! sqlite-vec's `vec0` answers KNN by brute force with one scalar
//! accumulator per distance (the crate builds its C without SIMD), about
//! 5 ms at 10k policies on this class of machine. The same exact scan over a
//! contiguous copy, with independent accumulators the compiler turns into
//! SIMD, is several times faster (`schedcp bench policy-search` measures
//! both in one run). `vec0` stays the durable copy; this one is rebuilt from
//! it whenever the database changed since it was read.

use rusqlite::Connection;

use super::Hit;
use crate::policies::model::State;

/// What identifies a database's contents as this connection sees them:
/// `PRAGMA data_version` moves when another connection commits, and
/// `total_changes` when this one writes.
pub type Stamp = (i64, u64);

pub fn stamp(c: &Connection) -> rusqlite::Result<Stamp> {
    let v: i64 = c.query_row("PRAGMA data_version", [], |r| r.get(0))?;
    Ok((v, c.total_changes()))
}

pub struct FlatIndex {
    pub stamp: Stamp,
    dims: usize,
    names: Vec<String>,
    states: Vec<Option<State>>,
    /// Row-major, `names.len() × dims`, unit vectors.
    vectors: Vec<f32>,
}

impl FlatIndex {
    /// Read every policy vector (the latest version's) from `policy_vec`.
    pub fn load(c: &Connection, dims: usize, stamp: Stamp) -> rusqlite::Result<FlatIndex> {
        let mut st = c.prepare(
            "SELECT p.name, v.state, v.embedding FROM policy_vec v
             JOIN policies p ON p.id = v.policy_id",
        )?;
        let mut rows = st.query([])?;
        let mut idx = FlatIndex {
            stamp,
            dims,
            names: Vec::new(),
            states: Vec::new(),
            vectors: Vec::new(),
        };
        while let Some(r) = rows.next()? {
            let blob = r.get_ref(2)?.as_blob()?;
            if blob.len() != dims * 4 {
                return Err(rusqlite::Error::InvalidColumnType(
                    2,
                    format!("embedding of {} bytes, expected {}", blob.len(), dims * 4),
                    rusqlite::types::Type::Blob,
                ));
            }
            idx.vectors.extend(
                blob.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            idx.names.push(r.get(0)?);
            idx.states
                .push(r.get::<_, Option<String>>(1)?.and_then(|s| s.parse().ok()));
        }
        Ok(idx)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The `k` most similar policies (cosine = dot product of unit
    /// vectors), best first; only those in `state` when given.
    pub fn nearest(&self, query: &[f32], state: Option<State>, k: usize) -> Vec<Hit> {
        if query.len() != self.dims || k == 0 {
            return Vec::new();
        }
        let mut scored: Vec<(f32, u32)> = self
            .vectors
            .chunks_exact(self.dims)
            .zip(&self.states)
            .enumerate()
            .filter(|(_, (_, s))| state.is_none() || **s == state)
            .map(|(i, (v, _))| (dot(query, v), i as u32))
            .collect();
        let by_score = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if scored.len() > k {
            scored.select_nth_unstable_by(k - 1, by_score);
            scored.truncate(k);
        }
        scored.sort_unstable_by(by_score);
        scored
            .into_iter()
            .map(|(s, i)| Hit {
                name: self.names[i as usize].clone(),
                score: f64::from(s),
            })
            .collect()
    }
}

/// Dot product with eight independent partial sums: without them every add
/// waits for the previous one (a float sum cannot be reordered), and with
/// them LLVM emits packed SIMD multiplies and adds.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_plain_sum_for_every_length() {
        for n in [0, 1, 7, 8, 9, 383, 384] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert!((f64::from(dot(&a, &b)) - plain).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn nearest_is_exact_best_first_and_filters_by_state() {
        let dims = 4;
        let rows: [(&str, State, [f32; 4]); 4] = [
            ("a", State::Verified, [1.0, 0.0, 0.0, 0.0]),
            ("b", State::Candidate, [0.8, 0.6, 0.0, 0.0]),
            ("c", State::Verified, [0.0, 1.0, 0.0, 0.0]),
            ("d", State::Candidate, [0.6, 0.8, 0.0, 0.0]),
        ];
        let idx = FlatIndex {
            stamp: (0, 0),
            dims,
            names: rows.iter().map(|r| r.0.to_string()).collect(),
            states: rows.iter().map(|r| Some(r.1)).collect(),
            vectors: rows.iter().flat_map(|r| r.2).collect(),
        };
        let q = [1.0, 0.0, 0.0, 0.0];
        let names = |h: Vec<Hit>| h.into_iter().map(|h| h.name).collect::<Vec<_>>();
        assert_eq!(names(idx.nearest(&q, None, 3)), ["a", "b", "d"]);
        assert_eq!(
            names(idx.nearest(&q, Some(State::Candidate), 5)),
            ["b", "d"]
        );
        assert_eq!(names(idx.nearest(&q, None, 10)).len(), 4);
        assert!(idx.nearest(&[1.0], None, 3).is_empty(), "wrong dimension");
        assert!((idx.nearest(&q, None, 1)[0].score - 1.0).abs() < 1e-6);
    }
}
