//! The shared store's record format: round trips, its size, and the reader refusing
//! everything no writer writes.

use super::*;
use crate::meta::{Meta, MetaLimits};
use crate::snapshot::fixtures::{checks, predecessors, NOW};
use crate::snapshot::CLOCK_SKEW_ALLOWANCE;

fn record(count: u8, version: u32) -> SessionRecord {
    SessionRecord {
        secret_hash: SecretHash([0x5a; 16]),
        started: Timestamp(NOW.0 - 5_000),
        expires: Timestamp(NOW.0 + 3_600_000),
        meta: Meta::from_json(r#"{"name":"bench user","period":11,"year":2026}"#).unwrap(),
        predecessors: predecessors(count),
        version,
    }
}

#[test]
fn records_round_trip_with_every_number_of_predecessors() {
    for predecessors in 0..=MAX_PREDECESSORS as u8 {
        for version in [0, 1, 0x0102_0304, u32::MAX] {
            let record = record(predecessors, version);
            let bytes = encode(&record);
            assert_eq!(
                bytes.len(),
                FIXED_BYTES + PREDECESSOR_BYTES * usize::from(predecessors) + 45
            );
            assert_eq!(bytes[..STAMP_BYTES], stamp(&record));
            assert_eq!(decode(&bytes, &checks()), Ok(record));
        }
    }
}

#[test]
fn a_record_is_34_bytes_and_its_metadata() {
    // What keeps Redis's memory per session small: a state file's line of the same
    // session (with its version) took 128 bytes.
    let bytes = encode(&record(0, 0));
    assert_eq!(bytes.len(), 34 + 45);
    assert_eq!(
        &bytes[34..],
        br#"{"name":"bench user","period":11,"year":2026}"#
    );
}

#[test]
fn the_stamp_is_the_version_format_and_secret_hash() {
    let one = record(0, 7);
    assert_eq!(stamp(&one)[..4], [0, 0, 0, 7]);
    assert_eq!(stamp(&one)[4], FORMAT);
    assert_eq!(stamp(&one)[5..], one.secret_hash.0);
    // Two records of one version with different secrets have different stamps.
    let mut other = one.clone();
    other.secret_hash = SecretHash([0xa5; 16]);
    assert_ne!(stamp(&one), stamp(&other));
}

#[test]
fn times_are_48_bit_milliseconds() {
    let mut record = record(0, 0);
    record.started = Timestamp(0x0000_0102_0304_0506);
    record.expires = Timestamp(0x0000_0102_0304_0507);
    let bytes = encode(&record);
    assert_eq!(bytes[21..27], [1, 2, 3, 4, 5, 6]);
    assert_eq!(bytes[27..33], [1, 2, 3, 4, 5, 7]);
}

#[test]
fn a_record_cut_short_is_refused_wherever_it_is_cut() {
    let bytes = encode(&record(2, 9));
    for len in 0..FIXED_BYTES + 2 * PREDECESSOR_BYTES {
        assert_eq!(
            decode(&bytes[..len], &checks()),
            Err(RecordError::Truncated),
            "cut at {len}"
        );
    }
    // Cut inside the metadata: no longer JSON.
    let cut = bytes.len() - 1;
    assert!(matches!(
        decode(&bytes[..cut], &checks()),
        Err(RecordError::Invalid(_))
    ));
}

/// Instances sharing Redis (or a Durable Object's successive hosts) never have exactly
/// the same clock. A session issued at the longest lifetime and grace by one whose clock
/// runs ahead must read on the others; it read as corrupt (an unknown token) when the
/// writer was 1 ms ahead.
#[test]
fn a_record_from_a_clock_running_ahead_is_read() {
    for ahead in [1, 1_000, CLOCK_SKEW_ALLOWANCE.as_millis() as u64] {
        let writer_now = Timestamp(NOW.0 + ahead);
        let mut ahead_record = record(0, 1);
        ahead_record.started = writer_now;
        ahead_record.expires = writer_now.saturating_add(*TOKEN_LIFETIME_RANGE.end());
        ahead_record.predecessors = Predecessors::from(vec![Predecessor {
            secret_hash: SecretHash([1; 16]),
            sealed_successor: [2; 16],
            deadline: writer_now.saturating_add(*ROTATION_GRACE_RANGE.end()),
        }]);
        assert_eq!(
            decode(&encode(&ahead_record), &checks()),
            Ok(ahead_record),
            "a writer {ahead} ms ahead"
        );
    }
}

#[test]
fn what_no_writer_writes_is_refused() {
    let good = encode(&record(1, 0));
    let refused = |change: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        change(&mut bytes);
        decode(&bytes, &checks()).unwrap_err()
    };
    assert_eq!(refused(&|b| b[4] = 2), RecordError::Format(2));
    assert_eq!(refused(&|b| b[4] = b'3'), RecordError::Format(b'3'));
    // More predecessors than a session keeps.
    let mut many = record(0, 0);
    many.predecessors = Predecessors::from(
        (0..=MAX_PREDECESSORS)
            .map(|_| Predecessor {
                secret_hash: SecretHash([1; 16]),
                sealed_successor: [2; 16],
                deadline: NOW,
            })
            .collect::<Vec<_>>(),
    );
    assert!(matches!(
        decode(&encode(&many), &checks()),
        Err(RecordError::Invalid(reason)) if reason.contains("predecessors")
    ));
    // A start after the expiry.
    let mut backwards = record(0, 0);
    backwards.started = Timestamp(backwards.expires.0 + 1);
    assert!(matches!(
        decode(&encode(&backwards), &checks()),
        Err(RecordError::Invalid(reason)) if reason.contains("starts after")
    ));
    // An expiry or a grace deadline further ahead than any server gives, even one whose
    // clock runs CLOCK_SKEW_ALLOWANCE ahead of the reader's.
    let one_ms = std::time::Duration::from_millis(1);
    let mut far = record(0, 0);
    far.expires = NOW.saturating_add(*TOKEN_LIFETIME_RANGE.end() + CLOCK_SKEW_ALLOWANCE + one_ms);
    assert!(matches!(
        decode(&encode(&far), &checks()),
        Err(RecordError::Invalid(reason)) if reason.contains("expiry")
    ));
    let mut late = record(1, 0);
    late.predecessors = Predecessors::from(vec![Predecessor {
        secret_hash: SecretHash([1; 16]),
        sealed_successor: [2; 16],
        deadline: NOW.saturating_add(*ROTATION_GRACE_RANGE.end() + CLOCK_SKEW_ALLOWANCE + one_ms),
    }]);
    assert!(matches!(
        decode(&encode(&late), &checks()),
        Err(RecordError::Invalid(reason)) if reason.contains("grace deadline")
    ));
    // Metadata that is not compact JSON, not an object, not UTF-8, or over the limits.
    let with_meta = |meta: &[u8]| {
        let mut bytes = good[..FIXED_BYTES + PREDECESSOR_BYTES].to_vec();
        bytes.extend_from_slice(meta);
        decode(&bytes, &checks())
    };
    assert!(with_meta(br#"{"a":1}"#).is_ok());
    for meta in [&br#"{ "a": 1 }"#[..], b"[1]", b"", b"{\"a\":\"\xff\"}"] {
        assert!(
            matches!(with_meta(meta), Err(RecordError::Invalid(_))),
            "{:?}",
            String::from_utf8_lossy(meta)
        );
    }
    let small = ReadChecks {
        meta_limits: MetaLimits {
            max_bytes: 4,
            ..MetaLimits::default()
        },
        ..checks()
    };
    assert!(matches!(
        decode(&good, &small),
        Err(RecordError::Invalid(reason)) if reason.contains("larger")
    ));
}
