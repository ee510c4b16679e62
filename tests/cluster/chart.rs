//! The Helm chart: lints, renders to the committed manifest, and the API server accepts it.

use std::process::Command;

use crate::support::Scope;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/raibid-operator");
const RENDERED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/raibid-operator.yaml");

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} on PATH (scripts/test puts it there): {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn render(namespace: &str) -> String {
    run(
        "helm",
        &[
            "template",
            "raibid-operator",
            CHART,
            "--namespace",
            namespace,
            "--include-crds",
        ],
        None,
    )
}

#[test]
fn the_chart_lints_and_matches_the_committed_manifest() {
    run("helm", &["lint", "--strict", CHART], None);
    let committed = std::fs::read_to_string(RENDERED).unwrap();
    assert!(
        committed == render("raibid-system"),
        "deploy/raibid-operator.yaml is out of date: run `helm template raibid-operator charts/raibid-operator --namespace raibid-system --include-crds > deploy/raibid-operator.yaml`"
    );
}

#[tokio::test]
async fn the_api_server_accepts_every_object_of_the_chart() {
    let scope = Scope::new("chart").await;
    let manifest = render(&scope.namespace);
    let out = run(
        "kubectl",
        &["apply", "--dry-run=server", "--server-side", "-f", "-"],
        Some(&manifest),
    );
    for kind in [
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "deployment",
        "service",
        "customresourcedefinition",
    ] {
        assert!(out.contains(kind), "{kind} missing from: {out}");
    }
}
