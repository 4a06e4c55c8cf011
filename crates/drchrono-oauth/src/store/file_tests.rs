use std::time::{Duration, UNIX_EPOCH};

use secrecy::ExposeSecret;

use super::*;

fn pair(generation: u64) -> TokenSet {
    TokenSet::new(
        format!("access-SECRET-{generation}"),
        format!("refresh-SECRET-{generation}"),
        UNIX_EPOCH + Duration::from_secs(1_000 + generation),
    )
    .with_scope("patients:read")
    .with_generation(generation)
}

fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

#[tokio::test]
async fn missing_file_is_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileTokenStore::new(dir.path().join("tokens.json"));
    assert!(store.load().await.unwrap().is_none());
}

#[tokio::test]
async fn saves_versioned_json_with_mode_0600_and_reloads_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let store = FileTokenStore::new(&path);
    store.save(0, &pair(1)).await.unwrap();

    let text = fs::read_to_string(&path).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["version"], 1);
    assert_eq!(value["tokens"]["generation"], 1);
    assert_eq!(value["tokens"]["refresh_token"], "refresh-SECRET-1");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(temp_files(dir.path()).is_empty());

    let loaded = FileTokenStore::new(&path).load().await.unwrap().unwrap();
    assert_eq!(loaded.generation, 1);
    assert_eq!(loaded.refresh_token.expose_secret(), "refresh-SECRET-1");
    assert_eq!(loaded.scope.as_deref(), Some("patients:read"));
}

#[tokio::test]
async fn compare_and_swap_rejects_a_stale_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let first = FileTokenStore::new(&path);
    let second = FileTokenStore::new(&path);
    first.save(0, &pair(1)).await.unwrap();
    second.save(1, &pair(2)).await.unwrap();

    let err = first.save(1, &pair(2)).await.unwrap_err();
    match err {
        StoreError::Conflict { expected, current } => {
            assert_eq!(expected, 1);
            let current = current.unwrap();
            assert_eq!(current.generation, 2);
            assert_eq!(current.refresh_token.expose_secret(), "refresh-SECRET-2");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_crash_at_any_step_leaves_the_old_or_the_new_pair() {
    for point in [
        CrashPoint::AfterCreate,
        CrashPoint::MidWrite,
        CrashPoint::AfterWrite,
        CrashPoint::AfterSync,
        CrashPoint::AfterRename,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let store = FileTokenStore::new(&path);
        store.save(0, &pair(1)).await.unwrap();

        store.crash_at(Some(point));
        assert!(store.save(1, &pair(2)).await.is_err(), "{point:?}");

        // A new process: a fresh store on the same file.
        let restarted = FileTokenStore::new(&path);
        let loaded = restarted.load().await.unwrap().unwrap();
        let expected = if point == CrashPoint::AfterRename {
            2
        } else {
            1
        };
        assert_eq!(loaded.generation, expected, "{point:?}");
        assert_eq!(
            loaded.refresh_token.expose_secret(),
            format!("refresh-SECRET-{expected}"),
            "{point:?}"
        );
        // The leftover temporary file (if any) never disturbs later saves.
        let leftovers = temp_files(dir.path()).len();
        assert_eq!(
            leftovers,
            usize::from(point != CrashPoint::AfterRename),
            "{point:?}"
        );
        restarted.save(expected, &pair(expected + 1)).await.unwrap();
        let after = restarted.load().await.unwrap().unwrap();
        assert_eq!(after.generation, expected + 1, "{point:?}");
    }
}

#[tokio::test]
async fn a_failed_write_removes_its_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    // The target is a non-empty directory: reading it fails before anything is written.
    let target = dir.path().join("tokens.json");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep"), b"x").unwrap();
    let store = FileTokenStore::new(&target);
    assert!(matches!(
        store.save(0, &pair(1)).await,
        Err(StoreError::Io { .. })
    ));
    // Writing to a file whose rename fails (target is a directory): the temp file goes.
    let err = write_file(&target, &pair(1), None).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Io {
                operation: "rename",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(temp_files(dir.path()).is_empty());
}

#[tokio::test]
async fn bad_files_are_typed_errors_that_quote_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    fs::write(&path, br#"{"version":2,"tokens":{}}"#).unwrap();
    let store = FileTokenStore::new(&path);
    assert!(matches!(
        store.load().await,
        Err(StoreError::UnsupportedVersion { found: 2 })
    ));

    fs::write(
        &path,
        br#"{"version":1,"tokens":{"access_token":"a","refresh_token":"r","expires_at":"SECRET-VALUE","generation":1}}"#,
    )
    .unwrap();
    let err = store.load().await.unwrap_err();
    assert!(matches!(err, StoreError::Format { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("SECRET"), "{shown}");

    fs::write(&path, b"{\"version\":1,\"tok").unwrap();
    assert!(matches!(store.load().await, Err(StoreError::Format { .. })));
}

#[tokio::test]
async fn a_save_removes_stale_temporary_files_and_keeps_fresh_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let store = FileTokenStore::new(&path);
    store.save(0, &pair(1)).await.unwrap();
    // A crashed save, long ago.
    store.crash_at(Some(CrashPoint::AfterSync));
    assert!(store.save(1, &pair(2)).await.is_err());
    store.crash_at(None);
    let crashed = temp_files(dir.path());
    assert_eq!(crashed.len(), 1);
    let old = std::time::SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(1);
    File::options()
        .write(true)
        .open(dir.path().join(&crashed[0]))
        .unwrap()
        .set_modified(old)
        .unwrap();
    // Another process's save in progress (fresh), another store's file, and an unrelated file.
    let in_progress = ".tokens.json.99999.0.tmp";
    fs::write(dir.path().join(in_progress), b"{}").unwrap();
    let other_store = ".other.json.1.0.tmp";
    fs::write(dir.path().join(other_store), b"{}").unwrap();
    File::options()
        .write(true)
        .open(dir.path().join(other_store))
        .unwrap()
        .set_modified(old)
        .unwrap();

    store.save(1, &pair(2)).await.unwrap();
    let mut left = temp_files(dir.path());
    left.sort();
    assert_eq!(left, vec![other_store.to_owned(), in_progress.to_owned()]);
    assert_eq!(store.load().await.unwrap().unwrap().generation, 2);
}
