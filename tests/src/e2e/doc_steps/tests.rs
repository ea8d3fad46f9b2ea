use super::*;

const PAGE: &str = "# Title\n\
intro\n\
```sh\n\
echo before any heading\n\
```\n\
## 1. First\n\
```sh\n\
a\n\
b | c\n\
```\n\
```yaml\n\
kind: NotShell\n\
```\n\
```console\n\
$ not run\n\
```\n\
## 2. Second\n\
### a sub-heading keeps the step's heading\n\
```sh\n\
d\n\
```\n";

#[test]
fn only_sh_blocks_are_steps_each_under_its_heading() {
    let steps = sh_blocks(PAGE);
    assert_eq!(
        steps,
        vec![
            DocStep {
                heading: String::new(),
                line: 3,
                script: "echo before any heading\n".into()
            },
            DocStep {
                heading: "1. First".into(),
                line: 7,
                script: "a\nb | c\n".into()
            },
            DocStep {
                heading: "2. Second".into(),
                line: 19,
                script: "d\n".into()
            },
        ]
    );
}

#[test]
fn a_failing_command_in_the_middle_of_a_step_fails_it() {
    let dir = std::env::temp_dir().join(format!("doc-steps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shell = Shell {
        dir: dir.clone(),
        path: vec![],
        kubeconfig: dir.join("kubeconfig"),
    };
    let page = Path::new("docs/x.md");
    let ok = shell
        .run(
            page,
            &sh_blocks("```sh\necho \"$KUBECONFIG\" > out\ncat out\necho e >&2\n```\n")[0],
        )
        .unwrap();
    assert_eq!(
        ok.stdout.trim(),
        dir.join("kubeconfig").display().to_string()
    );
    assert_eq!(ok.stderr, "e\n");
    let failing = &sh_blocks("## 3. Third\n```sh\nfalse | cat\necho not reached\n```\n")[0];
    let err = format!("{:#}", shell.run(page, failing).unwrap_err());
    assert!(err.starts_with("docs/x.md:2 (3. Third) failed"), "{err}");
    assert!(
        !err.contains("\nnot reached"),
        "pipefail and -e stop the step: {err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
