//! The names of a batch's jobs and nodes: [`JobId`] and [`NodeId`], each
//! handed out once (a job's by the batch as it queues it, a node's as the
//! cluster is built) and passed on from there, never counted again; and
//! [`IdVec`], a vector indexed by one of them, so that a node's or a job's
//! things live in one value found by its id, not at a position that
//! several vectors must agree on.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

use serde::Serialize;

/// A job of a batch (one file), numbered in the order the batch queued
/// them from 0; events carry it as that number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct JobId(usize);

/// A node of the cluster, numbered in the order it was connected from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeId(usize);

/// An id that numbers the values of an [`IdVec`].
pub trait Id: Copy + 'static {
    /// The id of the value at `index` (only an [`IdVec`] hands them out,
    /// and tests).
    fn from_index(index: usize) -> Self;
    /// Its position (for a display counting from 1, or turns taken in order).
    fn index(self) -> usize;
}

macro_rules! id {
    ($t:ty) => {
        impl Id for $t {
            fn from_index(index: usize) -> Self {
                Self(index)
            }
            fn index(self) -> usize {
                self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(JobId);
id!(NodeId);

/// Values numbered by an id: each `push` hands out the next id.
#[derive(Debug, Clone)]
pub struct IdVec<I, T> {
    items: Vec<T>,
    id: PhantomData<I>,
}

impl<I: Id, T> IdVec<I, T> {
    pub fn new() -> Self {
        IdVec { items: Vec::new(), id: PhantomData }
    }

    /// Add a value; its id.
    pub fn push(&mut self, item: T) -> I {
        self.items.push(item);
        I::from_index(self.items.len() - 1)
    }

    pub fn get(&self, id: I) -> Option<&T> {
        self.items.get(id.index())
    }

    pub fn get_mut(&mut self, id: I) -> Option<&mut T> {
        self.items.get_mut(id.index())
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The values in id order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.items.iter_mut()
    }

    /// The ids and values in id order.
    pub fn iter_ids(&self) -> impl Iterator<Item = (I, &T)> + '_ {
        self.items.iter().enumerate().map(|(i, t)| (I::from_index(i), t))
    }

    /// Every id, in order.
    pub fn ids(&self) -> impl Iterator<Item = I> + 'static {
        (0..self.items.len()).map(I::from_index)
    }

    /// The same ids with other values.
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> IdVec<I, U> {
        IdVec { items: self.items.iter().map(f).collect(), id: PhantomData }
    }

    /// The same ids with other values, made from each id and value.
    pub fn map_ids<U>(&self, mut f: impl FnMut(I, &T) -> U) -> IdVec<I, U> {
        IdVec { items: self.iter_ids().map(|(i, t)| f(i, t)).collect(), id: PhantomData }
    }
}

impl<I: Id, T> Default for IdVec<I, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I: Id, T> From<Vec<T>> for IdVec<I, T> {
    fn from(items: Vec<T>) -> Self {
        IdVec { items, id: PhantomData }
    }
}

impl<I: Id, T> Index<I> for IdVec<I, T> {
    type Output = T;
    fn index(&self, id: I) -> &T {
        &self.items[id.index()]
    }
}

impl<I: Id, T> IndexMut<I> for IdVec<I, T> {
    fn index_mut(&mut self, id: I) -> &mut T {
        &mut self.items[id.index()]
    }
}

impl<'a, I: Id, T> IntoIterator for &'a IdVec<I, T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_handed_out_in_order_and_serialize_as_numbers() {
        let mut v: IdVec<JobId, &str> = IdVec::new();
        let a = v.push("a");
        let b = v.push("b");
        assert!(a < b);
        assert_eq!((v[a], v[b]), ("a", "b"));
        assert_eq!(v.ids().collect::<Vec<_>>(), [a, b]);
        assert_eq!(serde_json::to_string(&b).unwrap(), "1");
        assert_eq!(b.to_string(), "1");
    }
}
