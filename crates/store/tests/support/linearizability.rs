//! A linearizability checker for the store's guarded-write model: each key is an independent
//! compare-and-set register whose state is its current value and revisions.
//!
//! The search is Wing & Gong's, with Lowe's memoization (WGL): walk the history's call/return entries in
//! time order, try to linearize each pending call whose result the model accepts, backtrack on a return
//! whose call was not linearized yet, and never revisit a (linearized set, model state) pair. Keys are
//! independent in the model, so the history is split by key first — each part is small, which keeps the
//! exponential worst case out of reach for the test sizes we use.
//!
//! Revisions are global, which the per-key split cannot see, so [`check_revision_order`] separately checks
//! that a write which finished before another began got the smaller revision.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// Nanoseconds since the start of the history, from a monotonic clock.
pub type Time = u64;

/// One stored version of a key. `value` names the written value (the tests write unique numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    pub value: u64,
    pub create_revision: i64,
    pub mod_revision: i64,
}

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Create { value: u64 },
    Update { value: u64, expected: i64 },
    Delete { expected: Option<i64> },
}

/// What the store answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A get's answer.
    Read(Option<Version>),
    /// A create or update happened at this revision.
    Written { revision: i64 },
    /// A delete happened at this revision; `prev` is what it deleted.
    Deleted { revision: i64, prev: Version },
    /// The guard failed and the store reported this as the key's current version.
    Conflict { current: Option<Version> },
}

/// One completed operation of a history.
#[derive(Clone, Debug)]
pub struct Operation {
    pub client: usize,
    pub key: String,
    pub op: Op,
    pub outcome: Outcome,
    /// When the client invoked the operation (before the request was sent).
    pub invoke: Time,
    /// When the answer arrived.
    pub ret: Time,
}

/// Why a history is not linearizable.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {:?}: {}", self.key, self.detail)
    }
}

/// The model state of one key: its current version, and the revision of its last write (deletes included),
/// which every later write to the key must exceed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct KeyState {
    current: Option<Version>,
    last_write: i64,
}

/// The sequential specification: the state after `op` answered `outcome` in `state`, or `None` if the
/// answer is impossible there.
fn step(state: &KeyState, op: &Op, outcome: &Outcome) -> Option<KeyState> {
    let fresh = |revision: i64| revision > state.last_write;
    match (op, outcome) {
        (Op::Get, Outcome::Read(seen)) => (*seen == state.current).then_some(*state),
        (Op::Create { value }, Outcome::Written { revision }) => {
            (state.current.is_none() && fresh(*revision)).then_some(KeyState {
                current: Some(Version {
                    value: *value,
                    create_revision: *revision,
                    mod_revision: *revision,
                }),
                last_write: *revision,
            })
        }
        (Op::Create { .. }, Outcome::Conflict { current }) => {
            (state.current.is_some() && *current == state.current).then_some(*state)
        }
        (Op::Update { value, expected }, Outcome::Written { revision }) => match state.current {
            Some(v) if v.mod_revision == *expected && fresh(*revision) => Some(KeyState {
                current: Some(Version {
                    value: *value,
                    create_revision: v.create_revision,
                    mod_revision: *revision,
                }),
                last_write: *revision,
            }),
            _ => None,
        },
        (Op::Update { expected, .. }, Outcome::Conflict { current }) => {
            let guard_fails = state.current.is_none_or(|v| v.mod_revision != *expected);
            (guard_fails && *current == state.current).then_some(*state)
        }
        (Op::Delete { expected }, Outcome::Deleted { revision, prev }) => {
            let guard_holds = expected.is_none_or(|e| e == prev.mod_revision);
            (state.current == Some(*prev) && guard_holds && fresh(*revision)).then_some(KeyState {
                current: None,
                last_write: *revision,
            })
        }
        (Op::Delete { expected }, Outcome::Conflict { current }) => {
            let guard_fails = match state.current {
                None => true,
                Some(v) => expected.is_some_and(|e| e != v.mod_revision),
            };
            (guard_fails && *current == state.current).then_some(*state)
        }
        _ => None,
    }
}

/// Checks a whole history: every key's operations must be linearizable on their own, and revisions must
/// respect real-time order across keys.
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        check_key(&ops).map_err(|detail| Violation {
            key: key.to_string(),
            detail,
        })?;
    }
    check_revision_order(history)
}

/// Every pair of successful writes where one returned before the other was invoked must have increasing
/// revisions, and no two writes may share a revision.
pub fn check_revision_order(history: &[Operation]) -> Result<(), Violation> {
    let mut writes: Vec<(&Operation, i64)> = history
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Written { revision } | Outcome::Deleted { revision, .. } => Some((op, revision)),
            _ => None,
        })
        .collect();
    let mut seen = HashSet::new();
    for (op, revision) in &writes {
        if !seen.insert(*revision) {
            return Err(Violation {
                key: op.key.clone(),
                detail: format!("revision {revision} given twice"),
            });
        }
    }
    // Sweep invocations in time order, folding in every write that returned strictly before.
    let mut by_return = writes.clone();
    by_return.sort_by_key(|(op, _)| op.ret);
    writes.sort_by_key(|(op, _)| op.invoke);
    let mut finished = by_return.iter().peekable();
    let mut max_finished: Option<(&Operation, i64)> = None;
    for (op, revision) in writes {
        while let Some((earlier, rev)) = finished.next_if(|(earlier, _)| earlier.ret < op.invoke) {
            if max_finished.is_none_or(|(_, max)| *rev > max) {
                max_finished = Some((earlier, *rev));
            }
        }
        if let Some((earlier, max)) = max_finished
            && max >= revision
        {
            return Err(Violation {
                key: op.key.clone(),
                detail: format!(
                    "write {:?} got revision {revision}, but a write to {:?} that finished before it began \
                     already had revision {max}",
                    op.op, earlier.key
                ),
            });
        }
    }
    Ok(())
}

const NONE: usize = usize::MAX;

/// One entry of the doubly linked call/return list the search walks.
struct Entry {
    op: usize,
    is_call: bool,
    /// For a call: the index of its return entry.
    partner: usize,
    prev: usize,
    next: usize,
}

/// WGL on one key's operations. Err describes the longest prefix that could be linearized.
fn check_key(ops: &[&Operation]) -> Result<(), String> {
    if ops.is_empty() {
        return Ok(());
    }
    // Entry 0 is the list head; then calls and returns in time order. At equal times calls come first, so
    // operations that touch in time count as concurrent (the lenient reading of a coarse clock).
    let mut events: Vec<(Time, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        assert!(
            op.invoke <= op.ret,
            "operation returned before it was invoked: {op:?}"
        );
        events.push((op.invoke, true, i));
        events.push((op.ret, false, i));
    }
    events.sort_by_key(|&(time, is_call, op)| (time, !is_call, op));
    let mut list = vec![Entry {
        op: NONE,
        is_call: false,
        partner: NONE,
        prev: NONE,
        next: 1,
    }];
    let mut return_of = vec![NONE; ops.len()];
    for (i, &(_, is_call, op)) in events.iter().enumerate() {
        let index = i + 1;
        list.push(Entry {
            op,
            is_call,
            partner: NONE,
            prev: index - 1,
            next: if index == events.len() { NONE } else { index + 1 },
        });
        if !is_call {
            return_of[op] = index;
        }
    }
    for entry in list.iter_mut().skip(1).filter(|e| e.is_call) {
        entry.partner = return_of[entry.op];
    }

    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, KeyState)> = HashSet::new();
    let mut calls: Vec<(usize, KeyState)> = Vec::new();
    let mut state = KeyState::default();
    let mut best = 0usize;
    let mut entry = list[0].next;
    loop {
        if list[0].next == NONE {
            return Ok(());
        }
        let e = &list[entry];
        if e.is_call {
            let op = ops[e.op];
            if let Some(next_state) = step(&state, &op.op, &op.outcome) {
                let mut next_set = linearized.clone();
                next_set[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((next_set.clone(), next_state)) {
                    calls.push((entry, state));
                    state = next_state;
                    linearized = next_set;
                    best = best.max(calls.len());
                    lift(&mut list, entry);
                    entry = list[0].next;
                    continue;
                }
            }
            entry = list[entry].next;
        } else {
            // A return whose call is still in the list: that call must come later, which cannot be.
            let Some((call_entry, previous)) = calls.pop() else {
                let op = ops[e.op];
                return Err(format!(
                    "no linearization: {:?} → {:?} (client {}, [{}, {}] ns) cannot be placed; at most {best} of {} \
                     operations linearized",
                    op.op,
                    op.outcome,
                    op.client,
                    op.invoke,
                    op.ret,
                    ops.len()
                ));
            };
            state = previous;
            let op = list[call_entry].op;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut list, call_entry);
            entry = list[call_entry].next;
        }
    }
}

/// Removes a call and its return from the list (their own links stay, for `unlift`).
fn lift(list: &mut [Entry], call: usize) {
    let ret = list[call].partner;
    for index in [call, ret] {
        let (prev, next) = (list[index].prev, list[index].next);
        list[prev].next = next;
        if next != NONE {
            list[next].prev = prev;
        }
    }
}

/// Puts back what the matching `lift` removed, in reverse order.
fn unlift(list: &mut [Entry], call: usize) {
    let ret = list[call].partner;
    for index in [ret, call] {
        let (prev, next) = (list[index].prev, list[index].next);
        list[prev].next = index;
        if next != NONE {
            list[next].prev = index;
        }
    }
}
