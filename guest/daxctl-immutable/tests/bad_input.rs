//! Bad input on the host: each case gets its own exit code and a message
//! that says what to do, and nothing on disk changes. These need no kernel
//! support for sealing, so they run everywhere.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_daxctl-immutable")).args(args).output().expect("run daxctl-immutable")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

#[test]
fn a_missing_file_is_bad_input_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let map = dir.path().join("map.json");
    fs::write(&map, r#"{"version":1,"file":"f","size":0,"extents":[]}"#).unwrap();
    for args in [
        vec!["seal", p(&missing)],
        vec!["unseal", p(&missing)],
        vec!["status", p(&missing)],
        vec!["map", p(&missing)],
        vec!["verify", p(&missing), "--against", p(&map)],
    ] {
        let o = cli(&args);
        assert_eq!(code(&o), 3, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("no such file"), "{args:?}: {}", stderr(&o));
    }
    assert!(!missing.exists());
}

#[test]
fn a_directory_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["seal", "unseal", "status", "map"] {
        let o = cli(&[sub, p(dir.path())]);
        assert_eq!(code(&o), 3, "{sub}: {}", stderr(&o));
        assert!(stderr(&o).contains("is a directory"), "{sub}: {}", stderr(&o));
    }
    let o = cli(&["create", p(dir.path()), "--size", "4K"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let file = dir.path().join("f");
    fs::write(&file, b"x").unwrap();
    let o = cli(&["check", p(&file)]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));
}

#[test]
fn bad_sizes_and_fills_are_usage_errors_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    for (args, says) in [
        (vec!["--size", "12X"], "unknown suffix"),
        (vec!["--size", "0"], "more than 0"),
        (vec!["--size", "lots"], "K, M or G"),
        (vec!["--size", "4K", "--fill", "0x5"], "two hex digits"),
        (vec!["--size", "4K", "--fill", "ones"], "zero"),
    ] {
        let mut all = vec!["create", p(&target)];
        all.extend(args.iter());
        let o = cli(&all);
        assert_eq!(code(&o), 2, "{all:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{all:?}: {}", stderr(&o));
        assert!(!target.exists(), "{all:?} created the file");
    }
}

#[test]
fn malformed_map_files_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    fs::write(&file, vec![7u8; 8192]).unwrap();
    for (text, says) in [
        ("", "map --json"),
        ("{", "map --json"),
        (r#"{"version":1,"file":"f","size":"big","extents":[]}"#, "map --json"),
        (r#"{"version":9,"file":"f","size":0,"extents":[]}"#, "version 9"),
    ] {
        let map = dir.path().join("map.json");
        fs::write(&map, text).unwrap();
        let o = cli(&["verify", p(&file), "--against", p(&map)]);
        assert_eq!(code(&o), 3, "{text:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{text:?}: {}", stderr(&o));
    }
    let o = cli(&["verify", p(&file), "--against", p(&dir.path().join("nowhere.json"))]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
}

#[test]
fn create_refuses_to_clobber_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    fs::write(&file, b"keep me").unwrap();
    let o = cli(&["create", p(&file), "--size", "4K"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(fs::read(&file).unwrap(), b"keep me");
    let o = cli(&["create", p(&file), "--size", "8K", "--fill", "0xdeadbeef", "--force"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let bytes = fs::read(&file).unwrap();
    assert_eq!(bytes.len(), 8192);
    assert!(bytes.chunks(4).all(|c| c == [0xde, 0xad, 0xbe, 0xef]));
}

#[test]
fn map_json_verifies_against_itself_and_catches_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    let o = cli(&["create", p(&file), "--size", "64K", "--fill", "0x5a"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "create is quiet on success");
    let o = cli(&["map", p(&file), "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let map = dir.path().join("map.json");
    fs::write(&map, &o.stdout).unwrap();
    let o = cli(&["verify", p(&file), "--against", p(&map)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "verify is quiet when the maps agree");
    fs::OpenOptions::new().append(true).open(&file).unwrap().set_len(128 * 1024).unwrap();
    let o = cli(&["verify", p(&file), "--against", p(&map), "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["same"], false);
    assert_eq!(v["differences"][0], "size: 65536 saved, 131072 now");
}
