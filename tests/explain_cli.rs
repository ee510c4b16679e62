//! `raibid-operator explain` as a person runs it: JSON on stdout and exit 0, or one line on
//! stderr and exit 2.

use std::{
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

fn explain(args: &[&str], input: &str) -> Output {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("raibid-explain-{}-{unique}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("input.json");
    std::fs::write(&file, input).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_raibid-operator"));
    command.arg("explain").args(args).arg("--file").arg(&file);
    command.output().unwrap()
}

#[test]
fn a_ready_issue_is_explained_as_json() {
    let input = r#"{"issue": {"number": 3, "title": "[WEB-1] Fix", "body": "Just fix it.", "state": "open",
        "labels": [{"name": "priority:medium"}], "user": {"login": "alice"}, "created_at": "2026-01-01T00:00:00Z"},
        "comments": []}"#;
    let out = explain(&["issue"], input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["state"], "Ready");
    assert_eq!(answer["priority"], "medium");
    assert_eq!(answer["issueId"], "WEB-1");
}

#[test]
fn malformed_input_exits_2_with_one_line() {
    for (what, input) in [
        ("issue", "{not json"),
        ("queue", "{\"issues\": 3}"),
        ("pr", "{}"),
    ] {
        let out = explain(&[what], input);
        assert_eq!(out.status.code(), Some(2), "{what}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.starts_with("raibid-operator explain: "), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_missing_file_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_raibid-operator"))
        .args(["explain", "pr", "--file", "/nonexistent/pr.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/pr.json"));
}
