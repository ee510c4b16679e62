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
    // One line per object: `<kind>[.<group>]/<name> serverside-applied (server dry run)`.
    let mut applied: Vec<&str> = out
        .lines()
        .filter(|line| line.ends_with("(server dry run)"))
        .filter_map(|line| line.split('/').next())
        .collect();
    applied.sort_unstable();
    assert_eq!(
        applied,
        [
            "clusterrole.rbac.authorization.k8s.io",
            "clusterrolebinding.rbac.authorization.k8s.io",
            "customresourcedefinition.apiextensions.k8s.io",
            "customresourcedefinition.apiextensions.k8s.io",
            "deployment.apps",
            "service",
            "serviceaccount",
        ],
        "every object of the chart, accepted: {out}"
    );
}
