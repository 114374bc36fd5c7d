//! GetPreferredAllocation from the distance matrix.
//!
//! Given the available devices of a pool, the ones that must be included
//! and a size, the preferred set is the one that, in this order:
//!
//! 1. has the lowest **cost**: the sum over every pair of chosen devices of
//!    their distance-matrix level's cost ([`Level::cost`]: PIX 20, PXB 30,
//!    PHB 35, NODE 40, SYS 50);
//! 2. has the highest **NUMA score**: the sum over the chosen devices of the
//!    free exclusive CPUs on each device's NUMA node (0 when unknown), so
//!    that among equally close sets the one on the NUMA node with the most
//!    free exclusive CPUs wins and the kubelet's CPU manager (and Griffin's
//!    own allocator) can align CPUs with it;
//! 3. comes first in address order (the sorted address lists compared
//!    lexicographically): deterministic.
//!
//! # Search
//!
//! * **Exhaustive** when the sets to compare are few (at most
//!   [`EXHAUSTIVE_LIMIT`]): every combination, in address order. Exact.
//! * **Hierarchy** otherwise, when the pool's levels form a hierarchy (an
//!   ultrametric: for every three devices the two largest of their three
//!   levels are equal, which is what the PCIe tree gives: VFs of one PF, a
//!   switch, a root port, a host bridge, a NUMA node). This is checked once
//!   when the pool is built, by single-linkage clustering: every pair's
//!   level must be the level at which its two devices first join one
//!   cluster. The clusters form a tree (leaves: devices; a node: a cluster
//!   whose sub-clusters are all that level apart), and a dynamic program
//!   over it finds, for every cluster and every count, the best devices:
//!   choosing `a` devices in one sub-cluster and `b` in the others costs
//!   their own costs plus `a·b` times the cluster's level. Exact, because
//!   the cost and the score add up over sub-clusters and the address order
//!   of disjoint sets is preserved by union. `O(n·k)` per request for `n`
//!   devices and size `k`.
//! * **Greedy** otherwise (a pool whose levels are not a hierarchy, e.g.
//!   with unknown NUMA nodes mixed in unusual ways): a **heuristic**. From
//!   the must-include devices (or from each available device in turn when
//!   there are none), add the device that costs least to join, repeatedly;
//!   keep the best set found. Not guaranteed optimal; the reason says so.

use std::collections::{BTreeMap, HashMap};

use griffin_devices::{Level, PciAddress};
use serde::Serialize;

/// Most combinations compared one by one.
pub const EXHAUSTIVE_LIMIT: u64 = 4096;

/// How the choice was searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Every combination: exact.
    Exhaustive,
    /// Dynamic program over the pool's hierarchy: exact.
    Hierarchy,
    /// Greedy growth: a heuristic.
    Greedy,
}

/// The preferred devices and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preference {
    /// The resource.
    pub resource: String,
    /// The chosen ids, in address order.
    pub ids: Vec<String>,
    /// Sum of the pairwise level costs.
    pub cost: u64,
    /// Sum over the chosen devices of the free exclusive CPUs of their NUMA
    /// node.
    pub numa_score: u64,
    /// How the choice was searched.
    pub method: Method,
    /// One line for people: pairs by level, NUMA nodes, method.
    pub reason: String,
}

/// The levels between a pool's devices, and their hierarchy when they form
/// one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Distances {
    n: usize,
    levels: Vec<Level>,
    tree: Option<Tree>,
}

#[derive(Debug, Clone)]
enum Node {
    Leaf(usize),
    Inner { level: Level, children: Vec<usize> },
}

#[derive(Debug, Clone)]
struct Tree {
    nodes: Vec<Node>,
    root: usize,
}

/// The chosen indices with their cost and score.
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    set: Vec<usize>,
    cost: u64,
    score: u64,
    method: Method,
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[a.max(b)] = a.min(b);
        }
    }
}

impl Distances {
    /// The levels between `addrs` (given by `level`) and their hierarchy,
    /// if they form one.
    pub(crate) fn new(
        addrs: &[PciAddress],
        level: impl Fn(PciAddress, PciAddress) -> Level,
    ) -> Self {
        let n = addrs.len();
        let mut levels = vec![Level::X; n * n];
        for i in 0..n {
            for j in i + 1..n {
                let l = level(addrs[i], addrs[j]);
                levels[i * n + j] = l;
                levels[j * n + i] = l;
            }
        }
        let mut d = Self {
            n,
            levels,
            tree: None,
        };
        d.tree = d.hierarchy();
        d
    }

    /// Whether the levels form a hierarchy (exact search at any size).
    pub(crate) fn hierarchical(&self) -> bool {
        self.tree.is_some()
    }

    fn at(&self, i: usize, j: usize) -> Level {
        self.levels[i * self.n + j]
    }

    fn cost(&self, i: usize, j: usize) -> u64 {
        u64::from(self.at(i, j).cost())
    }

    /// Single-linkage clustering; `None` when some pair's level is not the
    /// level at which its devices join (not an ultrametric).
    fn hierarchy(&self) -> Option<Tree> {
        let n = self.n;
        if n == 0 {
            return None;
        }
        let mut by_level: HashMap<Level, Vec<(usize, usize)>> = HashMap::new();
        for i in 0..n {
            for j in i + 1..n {
                by_level.entry(self.at(i, j)).or_default().push((i, j));
            }
        }
        let mut nodes: Vec<Node> = (0..n).map(Node::Leaf).collect();
        let mut node_of: HashMap<usize, usize> = (0..n).map(|i| (i, i)).collect();
        let mut uf = UnionFind((0..n).collect());
        for level in Level::ALL {
            let Some(pairs) = by_level.get(&level) else {
                continue;
            };
            if pairs.iter().any(|&(a, b)| uf.find(a) == uf.find(b)) {
                return None;
            }
            let old_roots: Vec<usize> = {
                let mut r: Vec<usize> = node_of.keys().copied().collect();
                r.sort_unstable();
                r
            };
            for &(a, b) in pairs {
                uf.union(a, b);
            }
            let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for r in old_roots {
                groups.entry(uf.find(r)).or_default().push(r);
            }
            let mut next = HashMap::new();
            for (root, members) in groups {
                let node = if members.len() == 1 {
                    node_of[&members[0]]
                } else {
                    nodes.push(Node::Inner {
                        level,
                        children: members.iter().map(|m| node_of[m]).collect(),
                    });
                    nodes.len() - 1
                };
                next.insert(root, node);
            }
            node_of = next;
        }
        // Every pair has a level, so one cluster is left.
        let root = *node_of.values().next()?;
        (node_of.len() == 1).then_some(Tree { nodes, root })
    }

    /// The preferred `size` devices among `avail` (sorted indices)
    /// containing `must` (sorted, a subset of `avail`, at most `size`);
    /// `score[i]` is device `i`'s NUMA score.
    pub(crate) fn choose(
        &self,
        avail: &[usize],
        must: &[usize],
        size: usize,
        score: &[u64],
    ) -> Choice {
        let free: Vec<usize> = avail
            .iter()
            .copied()
            .filter(|i| must.binary_search(i).is_err())
            .collect();
        let r = size - must.len();
        if binomial(free.len() as u64, r as u64) <= EXHAUSTIVE_LIMIT {
            return self.exhaustive(&free, must, r, score);
        }
        if let Some(tree) = &self.tree {
            return self.dynamic(tree, avail, must, size, score);
        }
        self.greedy(&free, must, r, score)
    }

    fn exhaustive(&self, free: &[usize], must: &[usize], r: usize, score: &[u64]) -> Choice {
        let mut base = 0;
        for (x, &a) in must.iter().enumerate() {
            for &b in &must[..x] {
                base += self.cost(a, b);
            }
        }
        let base_score: u64 = must.iter().map(|&i| score[i]).sum();
        let mut best: Option<(u64, u64, Vec<usize>)> = None;
        let mut chosen = Vec::with_capacity(r);
        self.dfs(
            free,
            must,
            r,
            0,
            base,
            base_score,
            score,
            &mut chosen,
            &mut best,
        );
        let (cost, sc, picked) = best.unwrap_or((base, base_score, Vec::new()));
        let mut set: Vec<usize> = must.iter().copied().chain(picked).collect();
        set.sort_unstable();
        Choice {
            set,
            cost,
            score: sc,
            method: Method::Exhaustive,
        }
    }

    /// Combinations in lexicographic order; a later one replaces the best
    /// only when strictly better, so ties keep the first in address order.
    #[allow(clippy::too_many_arguments)]
    fn dfs(
        &self,
        free: &[usize],
        must: &[usize],
        r: usize,
        start: usize,
        cost: u64,
        sc: u64,
        score: &[u64],
        chosen: &mut Vec<usize>,
        best: &mut Option<(u64, u64, Vec<usize>)>,
    ) {
        if chosen.len() == r {
            let better = match best {
                None => true,
                Some((c, s, _)) => cost < *c || (cost == *c && sc > *s),
            };
            if better {
                *best = Some((cost, sc, chosen.clone()));
            }
            return;
        }
        let left = r - chosen.len();
        for k in start..=free.len().saturating_sub(left) {
            if k >= free.len() {
                break;
            }
            let x = free[k];
            let add: u64 = must
                .iter()
                .chain(chosen.iter())
                .map(|&y| self.cost(x, y))
                .sum();
            chosen.push(x);
            self.dfs(
                free,
                must,
                r,
                k + 1,
                cost + add,
                sc + score[x],
                score,
                chosen,
                best,
            );
            chosen.pop();
        }
    }

    fn dynamic(
        &self,
        tree: &Tree,
        avail: &[usize],
        must: &[usize],
        size: usize,
        score: &[u64],
    ) -> Choice {
        let mut is_avail = vec![false; self.n];
        for &i in avail {
            is_avail[i] = true;
        }
        let mut is_must = vec![false; self.n];
        for &i in must {
            is_must[i] = true;
        }
        let ctx = Dp {
            tree,
            is_avail: &is_avail,
            is_must: &is_must,
            score,
            k: size,
        };
        let table = ctx.solve(tree.root);
        // A feasible set exists (size ≤ available, must ⊆ available).
        let best = table
            .into_iter()
            .nth(size)
            .flatten()
            .unwrap_or_else(|| Cand {
                cost: 0,
                score: 0,
                set: Vec::new(),
            });
        Choice {
            set: best.set,
            cost: best.cost,
            score: best.score,
            method: Method::Hierarchy,
        }
    }

    fn greedy(&self, free: &[usize], must: &[usize], r: usize, score: &[u64]) -> Choice {
        let seeds: Vec<Option<usize>> = if must.is_empty() && r > 0 {
            free.iter().map(|&i| Some(i)).collect()
        } else {
            vec![None]
        };
        let mut best: Option<(u64, u64, Vec<usize>)> = None;
        for seed in seeds {
            let mut set: Vec<usize> = must.to_vec();
            set.extend(seed);
            let mut left: Vec<usize> = free.iter().copied().filter(|i| Some(*i) != seed).collect();
            while set.len() < must.len() + r {
                // Cheapest to join, then highest score, then lowest address.
                let (pos, _) = left
                    .iter()
                    .enumerate()
                    .map(|(p, &x)| {
                        let add: u64 = set.iter().map(|&y| self.cost(x, y)).sum();
                        (p, (add, std::cmp::Reverse(score[x]), x))
                    })
                    .min_by_key(|(_, key)| *key)
                    .unwrap_or((0, (0, std::cmp::Reverse(0), 0)));
                set.push(left.remove(pos));
            }
            set.sort_unstable();
            let cost = self.set_cost(&set);
            let sc: u64 = set.iter().map(|&i| score[i]).sum();
            let better = match &best {
                None => true,
                Some((c, s, v)) => {
                    (cost, std::cmp::Reverse(sc), &set) < (*c, std::cmp::Reverse(*s), v)
                }
            };
            if better {
                best = Some((cost, sc, set));
            }
        }
        let (cost, score, set) = best.unwrap_or_default();
        Choice {
            set,
            cost,
            score,
            method: Method::Greedy,
        }
    }

    fn set_cost(&self, set: &[usize]) -> u64 {
        let mut c = 0;
        for (x, &a) in set.iter().enumerate() {
            for &b in &set[..x] {
                c += self.cost(a, b);
            }
        }
        c
    }
}

/// `C(n, k)`, saturating.
fn binomial(n: u64, k: u64) -> u64 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut r: u64 = 1;
    for i in 0..k {
        r = match r.checked_mul(n - i) {
            Some(v) => v / (i + 1),
            None => return u64::MAX,
        };
    }
    r
}

#[derive(Debug, Clone)]
struct Cand {
    cost: u64,
    score: u64,
    set: Vec<usize>,
}

struct Dp<'a> {
    tree: &'a Tree,
    is_avail: &'a [bool],
    is_must: &'a [bool],
    score: &'a [u64],
    k: usize,
}

/// Whether the sorted merge of `a` and `b` comes before `c` (equal
/// lengths, `a` and `b` disjoint).
fn merged_before(a: &[usize], b: &[usize], c: &[usize]) -> bool {
    let (mut i, mut j) = (0, 0);
    for &z in c {
        let x = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x < y => {
                i += 1;
                x
            }
            (_, Some(&y)) => {
                j += 1;
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, None) => return false,
        };
        if x != z {
            return x < z;
        }
    }
    false
}

fn merge(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut v = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j >= b.len() || (i < a.len() && a[i] < b[j]) {
            v.push(a[i]);
            i += 1;
        } else {
            v.push(b[j]);
            j += 1;
        }
    }
    v
}

impl Dp<'_> {
    /// For each count `j`, the best `j` devices of the cluster (`None`:
    /// impossible).
    fn solve(&self, node: usize) -> Vec<Option<Cand>> {
        match &self.tree.nodes[node] {
            Node::Leaf(i) => {
                let i = *i;
                let empty = Cand {
                    cost: 0,
                    score: 0,
                    set: Vec::new(),
                };
                if !self.is_avail[i] {
                    return vec![Some(empty)];
                }
                let one = Cand {
                    cost: 0,
                    score: self.score[i],
                    set: vec![i],
                };
                let zero = (!self.is_must[i]).then_some(empty);
                if self.k == 0 {
                    vec![zero]
                } else {
                    vec![zero, Some(one)]
                }
            }
            Node::Inner { level, children } => {
                let l = u64::from(level.cost());
                let mut acc = self.solve(children[0]);
                for &c in &children[1..] {
                    let h = self.solve(c);
                    let len = (acc.len() + h.len() - 1).min(self.k + 1);
                    let mut next: Vec<Option<Cand>> = vec![None; len];
                    for (a, x) in acc.iter().enumerate() {
                        let Some(x) = x else { continue };
                        for (b, y) in h.iter().enumerate() {
                            let Some(y) = y else { continue };
                            if a + b >= len {
                                break;
                            }
                            let cost = x.cost + y.cost + l * (a * b) as u64;
                            let score = x.score + y.score;
                            let take = match &next[a + b] {
                                None => true,
                                Some(cur) => {
                                    cost < cur.cost
                                        || (cost == cur.cost
                                            && (score > cur.score
                                                || (score == cur.score
                                                    && merged_before(&x.set, &y.set, &cur.set))))
                                }
                            };
                            if take {
                                next[a + b] = Some(Cand {
                                    cost,
                                    score,
                                    set: merge(&x.set, &y.set),
                                });
                            }
                        }
                    }
                    acc = next;
                }
                acc
            }
        }
    }
}

/// The preference of `choice` in `pool`, with its reason.
pub(crate) fn explain(
    pool: &super::Pool,
    choice: Choice,
    available: usize,
    free_cpus: &BTreeMap<u32, usize>,
) -> Preference {
    let mut pairs: BTreeMap<Level, usize> = BTreeMap::new();
    for (x, &a) in choice.set.iter().enumerate() {
        for &b in &choice.set[..x] {
            *pairs.entry(pool.dist.at(a, b)).or_default() += 1;
        }
    }
    let mut nodes: BTreeMap<Option<u32>, usize> = BTreeMap::new();
    for &i in &choice.set {
        *nodes.entry(pool.devices[i].device_numa_node).or_default() += 1;
    }
    let pairs_text = if pairs.is_empty() {
        "no pairs".to_owned()
    } else {
        pairs
            .iter()
            .map(|(l, c)| format!("{c}×{l}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let nodes_text = nodes
        .iter()
        .map(|(n, c)| match n {
            Some(n) => format!(
                "{c} on NUMA node {n} ({} free exclusive CPUs)",
                free_cpus.get(n).copied().unwrap_or(0)
            ),
            None => format!("{c} on an unknown NUMA node"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let method = match choice.method {
        Method::Exhaustive => "exact: every combination compared",
        Method::Hierarchy => "exact: dynamic program over the pool's PCIe hierarchy",
        Method::Greedy => "heuristic: greedy growth (the pool's levels are not a hierarchy)",
    };
    let reason = format!(
        "{} of {available} available; pairwise cost {} ({pairs_text}); {}; {method}",
        choice.set.len(),
        choice.cost,
        if nodes_text.is_empty() {
            "no device".to_owned()
        } else {
            nodes_text
        },
    );
    Preference {
        resource: pool.resource.clone(),
        ids: choice
            .set
            .iter()
            .map(|&i| pool.devices[i].id.clone())
            .collect(),
        cost: choice.cost,
        numa_score: choice.score,
        method: choice.method,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distances from an explicit level table.
    fn table(levels: &[&[Level]]) -> Distances {
        let n = levels.len();
        let addrs: Vec<PciAddress> = (0..n)
            .map(|i| format!("0000:{:02x}:00.0", i + 1).parse().unwrap())
            .collect();
        let idx: HashMap<PciAddress, usize> =
            addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        Distances::new(&addrs, |a, b| levels[idx[&a]][idx[&b]])
    }

    #[test]
    fn binomials_saturate() {
        assert_eq!(binomial(5, 2), 10);
        assert_eq!(binomial(256, 1), 256);
        assert_eq!(binomial(3, 5), 0);
        assert_eq!(binomial(1000, 500), u64::MAX);
    }

    #[test]
    fn merged_order_compares_unions() {
        assert!(merged_before(&[1], &[4], &[2, 3]));
        assert!(!merged_before(&[2], &[5], &[2, 3]));
        assert!(!merged_before(&[2], &[3], &[2, 3]), "equal is not before");
        assert_eq!(merge(&[1, 5], &[2, 3]), vec![1, 2, 3, 5]);
    }

    /// Devices placed by labels (NUMA node, host bridge, root port,
    /// switch): a pair's level is where their labels first differ, which
    /// makes an ultrametric, as a PCIe tree does.
    fn placed(labels: &[[u8; 4]]) -> Distances {
        use Level::*;
        let rows: Vec<Vec<Level>> = labels
            .iter()
            .map(|a| {
                labels
                    .iter()
                    .map(|b| match (0..4).find(|&i| a[i] != b[i]) {
                        _ if std::ptr::eq(a, b) => X,
                        Some(0) => SYS,
                        Some(1) => NODE,
                        Some(2) => PHB,
                        Some(3) => PXB,
                        _ => PIX,
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[Level]> = rows.iter().map(Vec::as_slice).collect();
        table(&refs)
    }

    /// A random request on `n` devices: available, must-include, size,
    /// scores.
    fn request(
        rng: &mut griffin_tests::Rng,
        n: usize,
    ) -> (Vec<usize>, Vec<usize>, usize, Vec<u64>) {
        let mut avail: Vec<usize> = (0..n).filter(|_| rng.below(4) != 0).collect();
        if avail.is_empty() {
            avail.push(rng.below(n as u64) as usize);
        }
        let size = rng.below(avail.len() as u64 + 1) as usize;
        let must: Vec<usize> = avail
            .iter()
            .copied()
            .filter(|_| rng.below(5) == 0)
            .take(size)
            .collect();
        let score = (0..n).map(|_| rng.below(4)).collect();
        (avail, must, size, score)
    }

    /// The dynamic program over the hierarchy gives exactly what comparing
    /// every combination gives (cost, score and the set itself), on random
    /// PCIe-like pools and requests; greedy gives a valid set never cheaper
    /// than the optimum.
    #[test]
    fn the_hierarchy_search_is_exact() {
        let cases = griffin_tests::fuzz_cases(300);
        for seed in 1..=u64::from(cases) {
            let mut rng = griffin_tests::Rng(seed * 0x9e37_79b9);
            let n = 1 + rng.below(12) as usize;
            let labels: Vec<[u8; 4]> = (0..n)
                .map(|_| std::array::from_fn(|_| rng.below(3) as u8))
                .collect();
            let d = placed(&labels);
            let tree = d.tree.as_ref().expect("labels make a hierarchy");
            for _ in 0..5 {
                let (avail, must, size, score) = request(&mut rng, n);
                let free: Vec<usize> = avail
                    .iter()
                    .copied()
                    .filter(|i| !must.contains(i))
                    .collect();
                let r = size - must.len();
                let exact = d.exhaustive(&free, &must, r, &score);
                let dp = d.dynamic(tree, &avail, &must, size, &score);
                assert_eq!(
                    (dp.cost, dp.score, &dp.set),
                    (exact.cost, exact.score, &exact.set),
                    "seed {seed}: labels {labels:?} avail {avail:?} must {must:?} size {size}"
                );
                assert_eq!(d.set_cost(&exact.set), exact.cost);
                let g = d.greedy(&free, &must, r, &score);
                assert_eq!(g.set.len(), size, "seed {seed}");
                assert!(must.iter().all(|m| g.set.contains(m)), "seed {seed}");
                assert!(g.set.iter().all(|x| avail.contains(x)), "seed {seed}");
                assert!(g.cost >= exact.cost, "seed {seed}");
                assert_eq!(d.set_cost(&g.set), g.cost);
            }
        }
    }

    /// A non-ultrametric table has no hierarchy and falls back to greedy
    /// when large; a hierarchical one has a tree.
    #[test]
    fn hierarchies_are_detected() {
        use Level::*;
        let t = table(&[&[X, PIX, SYS], &[PIX, X, SYS], &[SYS, SYS, X]]);
        assert!(t.tree.is_some());
        // d(0,1)=PIX, d(1,2)=PIX, d(0,2)=SYS: not an ultrametric.
        let t = table(&[&[X, PIX, SYS], &[PIX, X, PIX], &[SYS, PIX, X]]);
        assert!(t.tree.is_none());
    }
}
