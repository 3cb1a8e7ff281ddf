//! The heartbeat file (DESIGN §5): its mtime is the runner's last sign of life.

use std::fs::File;
use std::time::{Duration, SystemTime};

use mailbox::{Error, heartbeat};
use pretty_assertions::assert_eq;

use super::common::Session;

#[test]
fn touch_creates_and_refreshes_the_beat() {
    let s = Session::new();
    let path = s.paths.heartbeat();
    assert_eq!(heartbeat::last_beat(&path), None);

    heartbeat::touch(&path).unwrap();
    assert!(heartbeat::last_beat(&path).is_some());

    // Age the file instead of sleeping: a touch must bring it back to the present.
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(heartbeat::last_beat(&path), Some(old));
    let before = SystemTime::now();
    heartbeat::touch(&path).unwrap();
    assert!(heartbeat::last_beat(&path).unwrap() >= before - Duration::from_secs(1));
    // Touching keeps the file empty and does not need the database.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn touch_reports_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone").join("heartbeat");
    let Err(Error::Io { path: p, .. }) = heartbeat::touch(&path) else {
        panic!("touch in a missing directory must fail");
    };
    assert_eq!(p, path);
    assert_eq!(heartbeat::last_beat(&path), None);
}
