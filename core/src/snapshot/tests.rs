//! The state file format: round trips of v2, v1 still loads, and the strict reader refuses
//! everything no writer writes, naming the line.

use super::fixtures::{checks, predecessors, NOW};
use super::*;

fn sample() -> Vec<StoredSession> {
    (0..3u8)
        .map(|i| StoredSession {
            id: SessionId([i.wrapping_mul(77); 8]),
            record: SessionRecord {
                secret_hash: SecretHash([i ^ 0x5a; 16]),
                started: Timestamp(NOW.0 - 5_000),
                expires: Timestamp(NOW.0 + 1_000 + u64::from(i)),
                meta: Meta::from_json(&format!(r#"{{"n":{i},"s":"a b\nc"}}"#)).unwrap(),
                predecessors: predecessors(i),
                version: 0,
            },
        })
        .collect()
}

fn encoded(sessions: &[StoredSession]) -> Vec<u8> {
    let mut out = Vec::new();
    write_snapshot(&mut out, sessions).unwrap();
    out
}

fn read(text: &str) -> Result<Vec<StoredSession>, SnapshotError> {
    read_snapshot(text.as_bytes(), &checks())
}

fn refused_at(text: &str) -> (usize, String) {
    match read(text) {
        Err(SnapshotError::Corrupt { line, reason }) => (line, reason),
        other => panic!("expected a corrupt line, got {other:?}"),
    }
}

#[test]
fn round_trips() {
    let sessions = sample();
    let bytes = encoded(&sessions);
    assert_eq!(read_snapshot(&bytes[..], &checks()).unwrap(), sessions);
    assert_eq!(read_snapshot(&encoded(&[])[..], &checks()).unwrap(), vec![]);
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("token-server state v2\n"), "{text}");
}

#[test]
fn a_v1_file_loads_as_legacy_sessions() {
    let text = "token-server state v1\n\
        00112233445566778899aabbccddeeff 1700000001000 {\"user\":\"ann\"}\n\
        ffeeddccbbaa99887766554433221100 1700000002000 {}\n\
        end 2\n";
    let sessions = read(text).unwrap();
    assert_eq!(sessions.len(), 2);
    let first = &sessions[0];
    assert_eq!(
        first.id,
        SessionId([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77])
    );
    assert_eq!(first.record.secret_hash.0[15], 0xff);
    assert_eq!(first.record.expires, Timestamp(1_700_000_001_000));
    assert_eq!(first.record.started, NOW, "v1 did not record starts: now");
    assert_eq!(first.record.meta.as_json(), r#"{"user":"ann"}"#);
    assert!(first.record.predecessors.is_empty());
}

#[test]
fn every_truncation_is_refused() {
    let bytes = encoded(&sample());
    // Every cut but the one that only drops the final newline.
    for cut in 0..bytes.len() - 1 {
        assert!(
            read_snapshot(&bytes[..cut], &checks()).is_err(),
            "a file cut at byte {cut} of {} was accepted",
            bytes.len()
        );
    }
}

#[test]
fn corruption_and_other_versions_are_refused() {
    let text = String::from_utf8(encoded(&sample())).unwrap();
    for version in ["state v3", "state v0", "state v"] {
        assert!(matches!(
            read(&text.replacen("state v2", version, 1)),
            Err(SnapshotError::Version { .. })
        ));
    }
    assert_eq!(refused_at(&text.replacen(r#"{"n":1"#, r#"["n":1"#, 1)).0, 3);
    assert_eq!(refused_at(&text.replacen("4d4d", "4x4d", 1)).0, 3);
    assert_eq!(refused_at(&text.replacen("end 3", "end 4", 1)).0, 5);
    assert!(read("garbage").is_err());
    assert!(read("").is_err());
}

#[test]
fn duplicate_ids_are_refused_naming_the_second() {
    let mut sessions = sample();
    sessions[2].id = sessions[0].id;
    let text = String::from_utf8(encoded(&sessions)).unwrap();
    let (line, reason) = refused_at(&text);
    assert_eq!(line, 4);
    assert!(reason.contains("same id"), "{reason}");
    let v1 = "token-server state v1\n\
        00112233445566778899aabbccddeeff 1700000001000 {}\n\
        00112233445566778899aabbccddeeff 1700000001000 {}\n\
        end 2\n";
    assert_eq!(refused_at(v1).0, 3);
}

#[test]
fn data_after_the_end_line_is_refused() {
    let text = String::from_utf8(encoded(&sample())).unwrap();
    for extra in ["x", "\n", "end 3\n", "00 1 {}\n"] {
        let (line, reason) = refused_at(&format!("{text}{extra}"));
        assert_eq!(line, 6, "{extra:?}");
        assert!(reason.contains("after the end"), "{reason}");
    }
}

#[test]
fn times_no_server_writes_are_refused() {
    // The longest lifetime, written by a server whose clock ran up to 5 minutes ahead.
    let edge = NOW.saturating_add(Duration::from_secs(96 * 3600 + 5 * 60));
    let far = edge.saturating_add(Duration::from_millis(1));
    let mut sessions = sample();
    sessions[1].record.expires = edge;
    assert!(read(&String::from_utf8(encoded(&sessions)).unwrap()).is_ok());
    sessions[1].record.expires = far;
    let (line, reason) = refused_at(&String::from_utf8(encoded(&sessions)).unwrap());
    assert_eq!(line, 3);
    assert!(reason.contains("further ahead"), "{reason}");
    let huge = "token-server state v1\n\
        00112233445566778899aabbccddeeff 18446744073709551615 {}\nend 1\n";
    assert_eq!(refused_at(huge).0, 2);

    // The longest grace, from a clock up to 5 minutes ahead: read; 1 ms further: refused.
    let grace_edge = NOW.saturating_add(Duration::from_secs(5 * 60 + 5 * 60));
    let mut sessions = sample();
    let mut list = sessions[2].record.predecessors.as_slice().to_vec();
    list[0].deadline = grace_edge;
    sessions[2].record.predecessors = Predecessors::from(list.clone());
    assert!(read(&String::from_utf8(encoded(&sessions)).unwrap()).is_ok());
    list[0].deadline = grace_edge.saturating_add(Duration::from_millis(1));
    sessions[2].record.predecessors = Predecessors::from(list);
    assert_eq!(
        refused_at(&String::from_utf8(encoded(&sessions)).unwrap()).0,
        4
    );

    let mut sessions = sample();
    sessions[0].record.started = Timestamp(sessions[0].record.expires.0 + 1);
    assert_eq!(
        refused_at(&String::from_utf8(encoded(&sessions)).unwrap()).0,
        2
    );
}

#[test]
fn metadata_over_the_limits_or_not_as_written_is_refused() {
    let mut deep = String::from("1");
    for _ in 0..40 {
        deep = format!(r#"{{"d":{deep}}}"#);
    }
    let text = format!(
        "token-server state v1\n00112233445566778899aabbccddeeff 1700000001000 {deep}\nend 1\n"
    );
    let (line, reason) = refused_at(&text);
    assert_eq!(line, 2);
    assert!(reason.contains("32 levels"), "{reason}");
    let spaced = "token-server state v1\n\
        00112233445566778899aabbccddeeff 1700000001000 { \"a\": 1 }\nend 1\n";
    assert_eq!(refused_at(spaced).0, 2);
    let array = "token-server state v1\n\
        00112233445566778899aabbccddeeff 1700000001000 [1]\nend 1\n";
    assert_eq!(refused_at(array).0, 2);
}

#[test]
fn too_many_predecessors_and_malformed_ones_are_refused() {
    let mut sessions = sample();
    let list: Vec<_> = (0..=MAX_PREDECESSORS as u8)
        .map(|p| Predecessor {
            secret_hash: SecretHash([p; 16]),
            sealed_successor: [p; 16],
            deadline: NOW,
        })
        .collect();
    sessions[0].record.predecessors = Predecessors::from(list);
    let (line, reason) = refused_at(&String::from_utf8(encoded(&sessions)).unwrap());
    assert_eq!(line, 2);
    assert!(reason.contains("predecessors"), "{reason}");
    let text = String::from_utf8(encoded(&sample())).unwrap();
    let bad = text.replacen(":1700000000000 ", ":1700000000000:9 ", 1);
    assert_ne!(bad, text);
    assert!(read(&bad).is_err());
}

#[test]
fn a_line_over_the_bound_is_refused_without_reading_it_all() {
    let long = format!(
        "token-server state v1\n{}\nend 0\n",
        "a".repeat(MAX_LINE_BYTES + 10)
    );
    let (line, reason) = refused_at(&long);
    assert_eq!(line, 2);
    assert!(reason.contains("longer than"), "{reason}");
}

#[test]
fn a_streamed_file_taken_in_pieces_is_byte_identical() {
    let sessions = sample();
    let mut writer = SnapshotWriter::new(Vec::new()).unwrap();
    let mut file = Vec::new();
    for session in &sessions {
        writer.write(session).unwrap();
        file.append(writer.get_mut());
    }
    assert_eq!(writer.count(), 3);
    let (rest, count) = writer.finish().unwrap();
    file.extend_from_slice(&rest);
    assert_eq!((file, count), (encoded(&sessions), 3));
}
