//! A fixed-capacity CPU bitset for the allocator's hot path.

use std::fmt;

use griffin_devices::CpuList;

/// A set of CPU ids as a bitset (ids below 65 536).
#[derive(Clone, Default)]
pub struct CpuSet {
    words: Vec<u64>,
}

impl CpuSet {
    fn significant(&self) -> &[u64] {
        let end = self
            .words
            .iter()
            .rposition(|&w| w != 0)
            .map_or(0, |i| i + 1);
        &self.words[..end]
    }
}

impl PartialEq for CpuSet {
    fn eq(&self, other: &Self) -> bool {
        self.significant() == other.significant()
    }
}

impl Eq for CpuSet {}

impl std::hash::Hash for CpuSet {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.significant().hash(h);
    }
}

impl CpuSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set of the given ids.
    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> Self {
        let mut s = Self::new();
        for id in ids {
            s.insert(id);
        }
        s
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: u32) {
        let w = (id / 64) as usize;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (id % 64);
    }

    /// Removes `id`.
    pub fn remove(&mut self, id: u32) {
        if let Some(w) = self.words.get_mut((id / 64) as usize) {
            *w &= !(1 << (id % 64));
        }
    }

    /// True when `id` is in the set.
    pub fn contains(&self, id: u32) -> bool {
        self.words
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Ids, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros();
                w &= w - 1;
                Some(i as u32 * 64 + b)
            })
        })
    }

    /// `self ∪ other`.
    pub fn union_with(&mut self, other: &CpuSet) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// `self \ other`.
    pub fn subtract(&mut self, other: &CpuSet) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
    }

    /// `self ∩ other`.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet {
            words: self
                .words
                .iter()
                .zip(&other.words)
                .map(|(a, b)| a & b)
                .collect(),
        }
    }

    /// True when the sets share an id.
    pub fn intersects(&self, other: &CpuSet) -> bool {
        self.words.iter().zip(&other.words).any(|(a, b)| a & b != 0)
    }

    /// True when every id of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.words
            .iter()
            .enumerate()
            .all(|(i, a)| a & !other.words.get(i).copied().unwrap_or(0) == 0)
    }

    /// As a sorted list.
    pub fn to_list(&self) -> CpuList {
        CpuList::from_ids(self.iter())
    }
}

impl From<&CpuList> for CpuSet {
    fn from(l: &CpuList) -> Self {
        Self::from_ids(l.iter())
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_list(), f)
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet({self})")
    }
}

impl serde::Serialize for CpuSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_list().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for CpuSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let l = CpuList::deserialize(d)?;
        Ok(Self::from(&l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let mut a = CpuSet::from_ids([0, 1, 63, 64, 1000]);
        assert_eq!(a.len(), 5);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 1, 63, 64, 1000]);
        assert!(a.contains(1000) && !a.contains(999));
        a.remove(63);
        let b = CpuSet::from_ids([1, 64, 2000]);
        assert_eq!(a.intersection(&b).iter().collect::<Vec<_>>(), vec![1, 64]);
        assert!(a.intersects(&b));
        let mut c = a.clone();
        c.subtract(&b);
        assert_eq!(c.to_string(), "0,1000");
        assert!(c.is_subset(&a) && !a.is_subset(&c));
        c.union_with(&b);
        assert_eq!(c.to_string(), "0-1,64,1000,2000");
        assert!(CpuSet::new().is_empty() && CpuSet::new().is_subset(&c));
        let mut d = CpuSet::from_ids([200]);
        d.remove(200);
        assert_eq!(d, CpuSet::new(), "trailing empty words do not matter");
    }
}
