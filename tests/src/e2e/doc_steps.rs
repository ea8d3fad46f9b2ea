//! A guide's shell steps run as its reader runs them: every ```sh block of a Markdown page, in
//! order, each by `bash -euo pipefail` in one working directory, so a guide that drifts from
//! what works fails its test.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// One ```sh block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocStep {
    /// The `## ` heading the block is under (without the hashes), or empty.
    pub heading: String,
    /// Line of the opening fence, from 1.
    pub line: usize,
    /// The block's text.
    pub script: String,
}

/// The ```sh blocks of `markdown`, in order (pure).
pub fn sh_blocks(markdown: &str) -> Vec<DocStep> {
    let mut steps = Vec::new();
    let mut heading = String::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if let Some(h) = line.strip_prefix("## ") {
            heading = h.trim().to_string();
            continue;
        }
        if line.trim_end() != "```sh" {
            continue;
        }
        let mut script = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim_end() == "```" {
                break;
            }
            script.push_str(l);
            script.push('\n');
        }
        steps.push(DocStep {
            heading: heading.clone(),
            line: i + 1,
            script,
        });
    }
    steps
}

/// Where and with what the steps run: `PATH` starts with `path` (where kubectl, helm and the
/// plugin are), `KUBECONFIG` is set.
#[derive(Clone, Debug)]
pub struct Shell {
    pub dir: PathBuf,
    pub path: Vec<PathBuf>,
    pub kubeconfig: PathBuf,
}

impl Shell {
    /// Runs `step`; its stdout and stderr, or an error naming the page's line with both.
    pub fn run(&self, page: &Path, step: &DocStep) -> Result<StepOutput> {
        let mut path: Vec<PathBuf> = self.path.clone();
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let path: OsString = std::env::join_paths(path).context("joining PATH")?;
        eprintln!(
            "==> {}:{} ({}):\n{}",
            page.display(),
            step.line,
            step.heading,
            step.script.trim_end()
        );
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &step.script])
            .current_dir(&self.dir)
            .env("PATH", path)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .output()
            .context("running bash")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprint!("{stdout}{stderr}");
        if !out.status.success() {
            bail!(
                "{}:{} ({}) failed ({}):\n{}\n{stdout}{stderr}",
                page.display(),
                step.line,
                step.heading,
                out.status,
                step.script.trim_end()
            );
        }
        Ok(StepOutput {
            stdout,
            stderr: stderr.into_owned(),
        })
    }
}

/// What a step printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepOutput {
    pub stdout: String,
    pub stderr: String,
}

#[cfg(test)]
mod tests;
