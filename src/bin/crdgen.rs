//! Prints the operator's CustomResourceDefinitions as YAML (`crds/crds.yaml` is its output).

fn main() -> std::process::ExitCode {
    match raibid_operator::crd::crds_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("crdgen: could not serialize the CRDs: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
