//! Every YAML example in the README and docs/ is accepted by the real apiserver with ferrolb's
//! CRDs (server-side dry run: the schema and every rule checked, nothing stored): the ```yaml
//! blocks, the heredocs (`kubectl apply -f - <<'YAML'`) in the shell blocks, and
//! docs/examples/*.yaml. A renamed field or a tightened rule that breaks an example fails here.

use std::path::{Path, PathBuf};

use ferrolb_tests::bins::workspace_root;
use ferrolb_tests::control_plane;
use ferrolb_tests::process::run_input;

/// API groups of configuration files for tools, which no apiserver serves.
const NOT_API_OBJECTS: [&str; 1] = ["kind.x-k8s.io"];

/// One example: where it is and its text.
struct Example {
    place: String,
    yaml: String,
}

/// The ```yaml blocks and the YAML heredocs of the shell blocks of `path`.
fn examples_in(path: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path
        .strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string();
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let fence = line.trim_start();
        let yaml_block = fence == "```yaml";
        // A shell line ending in a YAML heredoc (not prose that mentions one).
        let heredoc = fence.ends_with("<<'YAML'") || fence.ends_with("<<YAML");
        if !(yaml_block || heredoc) {
            continue;
        }
        let end = if yaml_block { "```" } else { "YAML" };
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_start() == end {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        out.push(Example {
            place: format!("{name}:{}", i + 1),
            yaml: body,
        });
    }
    out
}

fn all_examples() -> Vec<Example> {
    let root = workspace_root();
    let mut files: Vec<PathBuf> = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out: Vec<Example> = files.iter().flat_map(|f| examples_in(f)).collect();
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(root.join("docs/examples"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    manifests.sort();
    for m in manifests {
        out.push(Example {
            place: m.strip_prefix(&root).unwrap().display().to_string(),
            yaml: std::fs::read_to_string(&m).unwrap(),
        });
    }
    out
}

#[test]
fn the_extraction_finds_blocks_and_heredocs() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("x.md");
    std::fs::write(
        &md,
        "text\n```yaml\nkind: A\n```\n```sh\nkubectl apply -f - <<'YAML'\nkind: B\nYAML\n```\n",
    )
    .unwrap();
    let found = examples_in(&md);
    let yaml: Vec<&str> = found.iter().map(|e| e.yaml.as_str()).collect();
    assert_eq!(yaml, ["kind: A\n", "kind: B\n"]);
    assert!(found[1].place.ends_with("x.md:6"), "{}", found[1].place);
}

#[test]
fn every_yaml_example_in_the_docs_is_accepted_by_the_apiserver() {
    let cp = control_plane::shared_with_crds();
    let examples = all_examples();
    assert!(
        examples.len() >= 12,
        "only {} examples found",
        examples.len()
    );
    let mut refused = Vec::new();
    for e in &examples {
        // Tools' own configuration files (kind's cluster config) are not API objects: they
        // must parse, and kind itself reads them in the kind driver's tests.
        if NOT_API_OBJECTS
            .iter()
            .any(|g| e.yaml.contains(&format!("apiVersion: {g}/")))
        {
            ferrolb_tests::rbac::documents(&e.yaml)
                .unwrap_or_else(|err| panic!("{}: {err:#}", e.place));
            continue;
        }
        let result = run_input(
            cp.kubectl()
                .unwrap()
                .args(["apply", "--dry-run=server", "-n", "default", "-f", "-"]),
            &e.yaml,
        );
        match result {
            Ok(out) => eprintln!("{}: {}", e.place, out.trim()),
            Err(err) => refused.push(format!("{}: {err:#}", e.place)),
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}
