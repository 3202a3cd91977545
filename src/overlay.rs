//! A diffusion overlay: extra neighbors that make diffusion take a number
//! of hops logarithmic in the number of groups, whatever the call graph.
//!
//! Proactive diffusion (section 4.3) and guardian forwarding carry a code
//! one hop per group-to-group call, so around a ring of `n` groups the last
//! group learns it after `n / 2` hops. The paper notes that groups and
//! guardians "can be arranged as to ensure rapid and robust diffusion";
//! this module draws that arrangement: the generalized de Bruijn digraph
//! (Reddy, Pradhan and Kuhl) in which group `i` of `n` passes codes on to
//! groups `d·i + r mod n`, `r = 0..d`. After `k` hops from `i` the codes
//! have reached every `d^k·i + s mod n` with `s < d^k`, so every group is
//! within `⌈log_d n⌉` hops of every other.
//!
//! The overlay is configuration, not protocol: add [`targets`] to each
//! group's [`GroupConfig::neighbors`](crate::group::GroupConfig) (besides
//! the groups it calls) and diffusion follows it. Codes verify themselves,
//! so an overlay changes only how fast outcomes spread, never what a group
//! decides. Each overlay edge costs a group's on-duty replicas one
//! `CommitInstall` per outcome and its target's replicas one answer each.
//!
//! ```
//! use bft_upgrade::overlay;
//! // Group 5 of 1,000 passes codes on to groups 15, 16 and 17.
//! let to: heapless::Vec<usize, 4> = overlay::targets(5, 1000, 3).collect();
//! assert_eq!(to, [15, 16, 17]);
//! // Every group is within 7 hops of every other (3^7 = 2,187 ≥ 1,000).
//! assert_eq!(overlay::max_hops(1000, 3), 7);
//! ```

/// The groups that group `index` of `count` passes codes on to in the
/// overlay of out-degree `degree`: `degree·index + r mod count` for
/// `r < degree`, without `index` itself (so one fewer where the digraph has
/// a loop, and at most `count - 1`). Empty when `index ≥ count`.
pub fn targets(index: usize, count: usize, degree: usize) -> impl Iterator<Item = usize> {
    let n = if index < count { degree.min(count) } else { 0 };
    // In u128, where `degree·index` and `base + r` cannot overflow; each
    // value is below `count`, so it fits back.
    let at = move |r: usize| {
        let v = (degree as u128).wrapping_mul(index as u128).wrapping_add(r as u128);
        v.checked_rem(count as u128).and_then(|t| usize::try_from(t).ok())
    };
    // `r < count`, so the `n` values are distinct.
    (0..n).filter_map(at).filter(move |&t| t != index)
}

/// A bound on the hops from any group to any other in the overlay of
/// `count` groups and out-degree `degree` (at least 2): `⌈log_degree count⌉`.
pub fn max_hops(count: usize, degree: usize) -> u32 {
    let (mut hops, mut reach) = (0u32, 1usize);
    while reach < count && degree >= 2 {
        reach = reach.saturating_mul(degree);
        hops = hops.saturating_add(1);
    }
    hops
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::VecDeque;
    use std::vec;
    use std::vec::Vec;

    use super::*;

    /// Hops from `from` to every group, by breadth-first search over the
    /// edges `targets` draws (independent of `max_hops`' arithmetic).
    fn hops_from(from: usize, count: usize, degree: usize) -> Vec<Option<u32>> {
        let mut hops = vec![None; count];
        hops[from] = Some(0);
        let mut queue = VecDeque::from([from]);
        while let Some(g) = queue.pop_front() {
            let h = hops[g].unwrap();
            for t in targets(g, count, degree) {
                if hops[t].is_none() {
                    hops[t] = Some(h + 1);
                    queue.push_back(t);
                }
            }
        }
        hops
    }

    #[test]
    fn every_group_is_within_the_bound_from_every_other() {
        for count in (1..=64).chain([100, 243, 244, 1000, 1023, 1025]) {
            for degree in 2..=4 {
                // The bound, computed here by floating point, not by `max_hops`.
                let bound =
                    if count == 1 { 0 } else { ((count as f64).ln() / (degree as f64).ln() - 1e-9).ceil() as u32 };
                assert_eq!(max_hops(count, degree), bound, "count {count} degree {degree}");
                let worst = (0..count)
                    .map(|from| hops_from(from, count, degree).iter().map(|h| h.expect("reached")).max().unwrap())
                    .max()
                    .unwrap();
                assert!(worst <= bound, "count {count} degree {degree}: {worst} hops > {bound}");
            }
        }
    }

    #[test]
    fn targets_are_distinct_in_range_and_never_the_group_itself() {
        for count in [1, 2, 3, 5, 10, 250_000, usize::MAX] {
            for index in [0, 1, count / 2, count.wrapping_sub(1)] {
                let t: Vec<usize> = targets(index, count, 3).collect();
                assert!(t.iter().all(|&x| x < count && x != index), "{count} {index}: {t:?}");
                let mut d = t.clone();
                d.sort_unstable();
                d.dedup();
                assert_eq!(d.len(), t.len());
                assert!(t.len() >= 3.min(count).saturating_sub(1));
            }
        }
        assert_eq!(targets(7, 5, 3).count(), 0);
        assert_eq!(targets(0, 10, 3).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(targets(249_999, 250_000, 3).collect::<Vec<_>>(), [249_997, 249_998]);
    }
}
