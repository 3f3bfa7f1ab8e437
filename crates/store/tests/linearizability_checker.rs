//! The linearizability checker's own tests: it must reject histories no sequential execution explains and
//! accept every concurrent history that one does — otherwise the store tests that rely on it prove nothing.

mod support {
    pub mod linearizability;
}

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::linearizability::{Op, Operation, Outcome, Time, Version, check, check_revision_order};

fn op(client: usize, key: &str, op: Op, outcome: Outcome, invoke: Time, ret: Time) -> Operation {
    Operation {
        client,
        key: key.to_string(),
        op,
        outcome,
        invoke,
        ret,
    }
}

fn version(value: u64, create_revision: i64, mod_revision: i64) -> Version {
    Version {
        value,
        create_revision,
        mod_revision,
    }
}

#[test]
fn accepts_a_sequential_history() {
    let v1 = version(1, 5, 5);
    let v2 = version(2, 5, 6);
    let history = vec![
        op(0, "a", Op::Get, Outcome::Read(None), 0, 1),
        op(
            0,
            "a",
            Op::Create { value: 1 },
            Outcome::Written { revision: 5 },
            2,
            3,
        ),
        op(
            1,
            "a",
            Op::Create { value: 9 },
            Outcome::Conflict { current: Some(v1) },
            4,
            5,
        ),
        op(
            1,
            "a",
            Op::Update {
                value: 2,
                expected: 5,
            },
            Outcome::Written { revision: 6 },
            6,
            7,
        ),
        op(
            0,
            "a",
            Op::Update {
                value: 3,
                expected: 5,
            },
            Outcome::Conflict { current: Some(v2) },
            8,
            9,
        ),
        op(
            0,
            "a",
            Op::Delete { expected: Some(6) },
            Outcome::Deleted {
                revision: 7,
                prev: v2,
            },
            10,
            11,
        ),
        op(
            1,
            "a",
            Op::Delete { expected: None },
            Outcome::Conflict { current: None },
            12,
            13,
        ),
        op(
            1,
            "a",
            Op::Update {
                value: 4,
                expected: 6,
            },
            Outcome::Conflict { current: None },
            14,
            15,
        ),
        op(0, "a", Op::Get, Outcome::Read(None), 16, 17),
    ];
    assert_eq!(check(&history), Ok(()));
}

#[test]
fn accepts_a_read_overlapping_a_write_that_sees_either_value() {
    let old = version(1, 1, 1);
    let new = version(2, 1, 2);
    for seen in [old, new] {
        let history = vec![
            op(
                0,
                "a",
                Op::Create { value: 1 },
                Outcome::Written { revision: 1 },
                0,
                10,
            ),
            op(
                0,
                "a",
                Op::Update {
                    value: 2,
                    expected: 1,
                },
                Outcome::Written { revision: 2 },
                20,
                40,
            ),
            op(1, "a", Op::Get, Outcome::Read(Some(seen)), 15, 30),
        ];
        assert_eq!(check(&history), Ok(()), "reading {seen:?} during the update");
    }
}

#[test]
fn accepts_reads_that_order_concurrent_writes_the_other_way_round() {
    // Two clients race to update from the same version: the store lets exactly one win; the loser's
    // conflict reports the winner's version even though the loser was invoked first.
    let base = version(1, 1, 1);
    let winner = version(3, 1, 2);
    let history = vec![
        op(
            0,
            "a",
            Op::Create { value: 1 },
            Outcome::Written { revision: 1 },
            0,
            1,
        ),
        op(
            1,
            "a",
            Op::Update {
                value: 2,
                expected: 1,
            },
            Outcome::Conflict {
                current: Some(winner),
            },
            10,
            50,
        ),
        op(
            2,
            "a",
            Op::Update {
                value: 3,
                expected: 1,
            },
            Outcome::Written { revision: 2 },
            20,
            30,
        ),
        op(3, "a", Op::Get, Outcome::Read(Some(base)), 5, 25),
    ];
    assert_eq!(check(&history), Ok(()));
}

#[test]
fn rejects_a_stale_read_after_a_completed_write() {
    let history = vec![
        op(
            0,
            "a",
            Op::Create { value: 1 },
            Outcome::Written { revision: 1 },
            0,
            10,
        ),
        op(
            0,
            "a",
            Op::Update {
                value: 2,
                expected: 1,
            },
            Outcome::Written { revision: 2 },
            20,
            30,
        ),
        op(1, "a", Op::Get, Outcome::Read(Some(version(1, 1, 1))), 40, 50),
    ];
    let violation = check(&history).unwrap_err();
    assert_eq!(violation.key, "a");
}

#[test]
fn rejects_a_read_of_a_value_nobody_wrote() {
    let history = vec![
        op(
            0,
            "a",
            Op::Create { value: 1 },
            Outcome::Written { revision: 1 },
            0,
            10,
        ),
        op(1, "a", Op::Get, Outcome::Read(Some(version(7, 1, 1))), 5, 50),
    ];
    assert!(check(&history).is_err());
}

#[test]
fn rejects_two_successful_creates_of_one_key() {
    let history = vec![
        op(
            0,
            "a",
            Op::Create { value: 1 },
            Outcome::Written { revision: 1 },
            0,
            10,
        ),
        op(
            1,
            "a",
            Op::Create { value: 2 },
            Outcome::Written { revision: 2 },
            0,
            10,
        ),
    ];
    assert!(check(&history).is_err());
}

#[test]
fn rejects_an_update_whose_guard_should_have_failed() {
    let history = vec![
        op(
            0,
            "a",
            Op::Create { value: 1 },
            Outcome::Written { revision: 1 },
            0,
            10,
        ),
        op(
            0,
            "a",
            Op::Update {
                value: 2,
                expected: 1,
            },
            Outcome::Written { revision: 2 },
            20,
            30,
        ),
        // Lost update: a second writer also "succeeds" from the version the first one replaced.
        op(
            1,
            "a",
            Op::Update {
                value: 3,
                expected: 1,
            },
            Outcome::Written { revision: 3 },
            25,
            40,
        ),
    ];
    assert!(check(&history).is_err());
}

#[test]
fn rejects_a_conflict_that_reports_the_wrong_current_value() {
    let history = vec![
        op(
            0,
            "a",
            Op::Create { value: 1 },
            Outcome::Written { revision: 1 },
            0,
            10,
        ),
        op(
            1,
            "a",
            Op::Update {
                value: 2,
                expected: 9,
            },
            Outcome::Conflict { current: None },
            20,
            30,
        ),
    ];
    assert!(check(&history).is_err());
}

#[test]
fn rejects_a_delete_that_reports_the_wrong_previous_value() {
    let history = vec![
        op(
            0,
            "a",
            Op::Create { value: 1 },
            Outcome::Written { revision: 1 },
            0,
            10,
        ),
        op(
            0,
            "a",
            Op::Delete { expected: None },
            Outcome::Deleted {
                revision: 2,
                prev: version(1, 1, 0),
            },
            20,
            30,
        ),
    ];
    assert!(check(&history).is_err());
}

#[test]
fn rejects_a_key_whose_revision_goes_backwards() {
    let history = vec![
        op(
            0,
            "a",
            Op::Create { value: 1 },
            Outcome::Written { revision: 5 },
            0,
            10,
        ),
        op(
            0,
            "a",
            Op::Delete { expected: None },
            Outcome::Deleted {
                revision: 6,
                prev: version(1, 5, 5),
            },
            20,
            30,
        ),
        op(
            0,
            "a",
            Op::Create { value: 2 },
            Outcome::Written { revision: 4 },
            40,
            50,
        ),
    ];
    assert!(check(&history).is_err());
}

#[test]
fn revision_order_across_keys_follows_real_time() {
    let concurrent = vec![
        op(
            0,
            "a",
            Op::Create { value: 1 },
            Outcome::Written { revision: 2 },
            0,
            10,
        ),
        op(
            1,
            "b",
            Op::Create { value: 2 },
            Outcome::Written { revision: 1 },
            5,
            15,
        ),
    ];
    assert_eq!(check_revision_order(&concurrent), Ok(()));
    let sequential = vec![
        op(
            0,
            "a",
            Op::Create { value: 1 },
            Outcome::Written { revision: 2 },
            0,
            10,
        ),
        op(
            1,
            "b",
            Op::Create { value: 2 },
            Outcome::Written { revision: 1 },
            20,
            30,
        ),
    ];
    assert!(
        check(&sequential).is_err(),
        "b began after a finished but got a smaller revision"
    );
    let duplicate = vec![
        op(
            0,
            "a",
            Op::Create { value: 1 },
            Outcome::Written { revision: 1 },
            0,
            10,
        ),
        op(
            1,
            "b",
            Op::Create { value: 2 },
            Outcome::Written { revision: 1 },
            5,
            15,
        ),
    ];
    assert!(check_revision_order(&duplicate).is_err());
}

/// Builds a history that is linearizable by construction: a sequential execution on a few keys, each
/// operation stretched into an interval around its linearization point so that many overlap.
fn generated_history(seed: u64, len: usize) -> Vec<Operation> {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys = ["a", "b", "c"];
    let mut current: [Option<Version>; 3] = [None; 3];
    let mut revision = 0i64;
    let mut history = Vec::with_capacity(len);
    for i in 0..len {
        let k = rng.random_range(0..keys.len());
        let state = current[k];
        let value = i as u64 + 1;
        let stale = rng.random_bool(0.3);
        let (op, outcome) = match (rng.random_range(0..4), state) {
            (0, _) => (Op::Get, Outcome::Read(state)),
            (1, None) => {
                revision += 1;
                current[k] = Some(version(value, revision, revision));
                (Op::Create { value }, Outcome::Written { revision })
            }
            (1, Some(_)) => (Op::Create { value }, Outcome::Conflict { current: state }),
            (2, Some(v)) if !stale => {
                revision += 1;
                current[k] = Some(version(value, v.create_revision, revision));
                (
                    Op::Update {
                        value,
                        expected: v.mod_revision,
                    },
                    Outcome::Written { revision },
                )
            }
            (2, _) => (
                Op::Update {
                    value,
                    expected: revision + 1000,
                },
                Outcome::Conflict { current: state },
            ),
            (_, Some(v)) => {
                revision += 1;
                current[k] = None;
                let expected = (!stale).then_some(v.mod_revision);
                (Op::Delete { expected }, Outcome::Deleted { revision, prev: v })
            }
            (_, None) => (Op::Delete { expected: None }, Outcome::Conflict { current: None }),
        };
        let point = i as Time * 10;
        let invoke = point.saturating_sub(rng.random_range(0..80));
        let ret = point + rng.random_range(0..80);
        history.push(Operation {
            client: i % 16,
            key: keys[k].to_string(),
            op,
            outcome,
            invoke,
            ret,
        });
    }
    history
}

#[test]
fn accepts_long_highly_concurrent_histories() {
    for seed in 0..5 {
        let history = generated_history(seed, 3000);
        assert_eq!(check(&history), Ok(()), "seed {seed}");
    }
}

#[test]
fn rejects_a_generated_history_with_one_read_made_stale() {
    let mut history = generated_history(42, 2000);
    // Find a read that saw a version which a later, non-overlapping write replaced; replay the read after
    // that write returned, still seeing the old version.
    let (reader, replaced_by) = history
        .iter()
        .enumerate()
        .find_map(|(i, read)| {
            let Outcome::Read(Some(seen)) = read.outcome else {
                return None;
            };
            history
                .iter()
                .position(|w| {
                    w.key == read.key
                        && w.invoke > read.ret
                        && matches!(w.op, Op::Update { expected, .. } if expected == seen.mod_revision)
                        && matches!(w.outcome, Outcome::Written { .. })
                })
                .map(|w| (i, w))
        })
        .expect("the generator produces a read followed by an update of what it read");
    let after = history[replaced_by].ret + 1;
    let mut stale = history[reader].clone();
    stale.invoke = after;
    stale.ret = after + 5;
    history.push(stale);
    assert!(check(&history).is_err());
}
