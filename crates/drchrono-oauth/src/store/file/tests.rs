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

/// Sets a file's modification time `age` in the past.
fn age(path: &Path, age: Duration) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - age)
        .unwrap();
}

#[tokio::test]
async fn temporary_names_are_random_not_pid_based() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    // Two stores on one file, as two containers sharing a volume (both PID 1) would hold.
    let one = FileTokenStore::new(&path);
    let two = FileTokenStore::new(&path);
    one.save(0, &pair(1)).await.unwrap();
    one.crash_at(Some(CrashPoint::AfterSync));
    two.crash_at(Some(CrashPoint::AfterSync));
    for _ in 0..4 {
        assert!(one.save(1, &pair(2)).await.is_err());
        assert!(two.save(1, &pair(2)).await.is_err());
    }
    let mut names = temp_files(dir.path());
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8, "{names:?}");
    let pid = std::process::id().to_string();
    for name in &names {
        assert!(is_temp_of(name, "tokens.json"), "{name}");
        let middle = &name[".tokens.json.".len()..name.len() - ".tmp".len()];
        assert_eq!(middle.len(), 32, "128 random bits: {name}");
        assert!(!middle.contains(&pid), "no process id: {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_never_touches_the_temporary_files_of_a_writer_with_the_same_pid() {
    let dir = tempfile::tempdir().unwrap();
    // Another container, also PID `pid`, is in the middle of its saves: its temporary
    // files are named as this process's would be under a pid-and-counter scheme (this
    // process's counter is far below 1024: every save in this test binary counts).
    let pid = std::process::id();
    let theirs: Vec<PathBuf> = ["one.json", "two.json"]
        .iter()
        .flat_map(|name| (0..1024).map(move |n| format!(".{name}.{pid}.{n}.tmp")))
        .map(|name| dir.path().join(name))
        .collect();
    for file in &theirs {
        fs::write(file, b"their pair, being written").unwrap();
    }
    // Two stores in one directory, saving concurrently: neither loses a save.
    let one = FileTokenStore::new(dir.path().join("one.json"));
    let two = FileTokenStore::new(dir.path().join("two.json"));
    let saves = |store: FileTokenStore| async move {
        for generation in 1..=16 {
            store.save(generation - 1, &pair(generation)).await?;
        }
        Ok::<_, StoreError>(())
    };
    let (saved_one, saved_two) = tokio::join!(saves(one.clone()), saves(two.clone()));
    saved_one.unwrap();
    saved_two.unwrap();
    assert_eq!(one.load().await.unwrap().unwrap().generation, 16);
    assert_eq!(two.load().await.unwrap().unwrap().generation, 16);
    for file in &theirs {
        assert_eq!(
            fs::read(file).unwrap(),
            b"their pair, being written",
            "{}",
            file.display()
        );
    }
    assert_eq!(
        temp_files(dir.path()).len(),
        theirs.len(),
        "none of ours is left"
    );
}

#[tokio::test]
async fn a_failed_save_removes_nothing_it_did_not_create() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    // The temporary name is taken (by another writer): creating it fails, and that
    // writer's file stays as it was.
    let taken = dir
        .path()
        .join(".tokens.json.0123456789abcdef0123456789abcdef.tmp");
    fs::write(&taken, b"another writer's pair").unwrap();
    let err = write_via(&path, &taken, &pair(1), None).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Io {
                operation: "create temporary file",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fs::read(&taken).unwrap(), b"another writer's pair");
    assert!(!path.exists());

    // The directory was removed (a volume unmounted): the save fails, typed, and the
    // files of the same name elsewhere are untouched.
    let gone = dir.path().join("gone");
    fs::create_dir(&gone).unwrap();
    let store = FileTokenStore::new(gone.join("tokens.json"));
    store.save(0, &pair(1)).await.unwrap();
    fs::remove_dir_all(&gone).unwrap();
    assert!(matches!(
        store.save(0, &pair(1)).await,
        Err(StoreError::Io { .. })
    ));
    assert!(!gone.exists());
    assert_eq!(fs::read(&taken).unwrap(), b"another writer's pair");
}

#[tokio::test]
async fn stale_cleanup_removes_only_this_stores_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let store = FileTokenStore::new(&path);
    let old = STALE_TEMP_AGE + Duration::from_secs(1);
    // Left by crashed saves of this store, long ago: removed.
    let crashed = [
        ".tokens.json.00000000000000000000000000000abc.tmp",
        ".tokens.json.4242.7.tmp",
    ];
    // Anything else, however old: kept. Another store whose name starts with ours, a file
    // of the user's, a name almost of the pattern, a symbolic link, a directory.
    let kept = [
        ".tokens.json.bak.1.0.tmp",
        ".tokens.json.bak.0123456789abcdef0123456789abcdef.tmp",
        ".tokens.json.notes.tmp",
        ".tokens.json.0123456789ABCDEF0123456789ABCDEF.tmp",
        ".tokens.json.0123456789abcdef.tmp",
        ".tokens.json..tmp",
        "tokens.json.1.0.tmp",
    ];
    for name in crashed.iter().chain(&kept) {
        fs::write(dir.path().join(name), b"{}").unwrap();
        age(&dir.path().join(name), old);
    }
    #[cfg(unix)]
    let link = {
        let link = ".tokens.json.ffffffffffffffffffffffffffffffff.tmp";
        std::os::unix::fs::symlink(dir.path().join(kept[0]), dir.path().join(link)).unwrap();
        link
    };
    let subdir = ".tokens.json.eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.tmp";
    fs::create_dir(dir.path().join(subdir)).unwrap();
    // Another writer's save in progress: fresh, kept.
    let in_progress = ".tokens.json.dddddddddddddddddddddddddddddddd.tmp";
    fs::write(dir.path().join(in_progress), b"{}").unwrap();

    store.save(0, &pair(1)).await.unwrap();
    for name in crashed {
        assert!(!dir.path().join(name).exists(), "{name} is removed");
    }
    for name in kept.iter().chain([&subdir, &in_progress]) {
        assert!(dir.path().join(name).exists(), "{name} is kept");
    }
    #[cfg(unix)]
    assert!(
        fs::symlink_metadata(dir.path().join(link)).is_ok(),
        "the link is kept"
    );
}
