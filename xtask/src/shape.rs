//! Checks of the codebase's shape that `cargo xtask test` runs before compiling anything:
//!
//! - every name of the API contract (`crds/src/contract.rs`) is spelled only there: other Rust
//!   code names the constant. Annotation and label names (distinctive) may not appear in any
//!   string; reasons, actions and the short condition types (CamelCase words that also occur in
//!   prose) may not appear as a whole string literal. Not checked: the API group, which kube's
//!   derive attributes need as a literal, and the field managers, whose strings are also the
//!   binaries' names;
//! - no Rust source file has more than [`MAX_CODE_LINES`] lines of code (blank and comment lines
//!   not counted) unless its header says why, in a line with [`LONG_FILE_MARK`].

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The most lines of code a source file has without a reason in its header.
pub const MAX_CODE_LINES: usize = 600;
/// Written in a file's first lines, followed by the reason, to allow more than [`MAX_CODE_LINES`].
pub const LONG_FILE_MARK: &str = "Longer than 600 lines because";
/// The one file that spells the contract.
const CONTRACT: &str = "crds/src/contract.rs";
/// This checker, whose tests spell sample names.
const CHECKER: &str = "xtask/src/shape.rs";

/// Runs both checks over the Rust files git tracks (and new ones it does not ignore) in `root`.
pub fn check(root: &Path) -> Result<()> {
    eprintln!("==> shape: contract names spelled once, file sizes");
    let contract = std::fs::read_to_string(root.join(CONTRACT))
        .with_context(|| format!("reading {CONTRACT}"))?;
    let names = contract_names(&contract);
    if names.len() < 20 {
        bail!(
            "{CONTRACT}: found only {} names; has its layout changed?",
            names.len()
        );
    }
    let mut problems = Vec::new();
    for file in rust_files(root)? {
        let relative = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {relative}"))?;
        if relative != CONTRACT && relative != CHECKER {
            problems.extend(
                spelled_names(&text, &names)
                    .into_iter()
                    .map(|(line, name)| {
                        format!(
                            "{relative}:{line}: spells {name:?}; use the constant from {CONTRACT}"
                        )
                    }),
            );
        }
        let lines = code_lines(&text);
        if lines > MAX_CODE_LINES && !has_long_file_reason(&text) {
            problems.push(format!(
                "{relative}: {lines} lines of code (most {MAX_CODE_LINES}); split it by concept or say why in a header line with \"{LONG_FILE_MARK}\""
            ));
        }
    }
    if !problems.is_empty() {
        bail!("the codebase's shape:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// How a contract name is matched in other files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// Anywhere in a string on a code line (distinctive names: annotations, labels).
    Substring(String),
    /// Only as a whole string literal (CamelCase words that occur in prose too).
    Literal(String),
}

/// The checked names of `contract` (the text of contract.rs): `pub const X: &str = "..."` or
/// `= ferrolb_io!("...")` in its `annotation`, `label`, `condition`, `reason` and `action`
/// modules.
pub fn contract_names(contract: &str) -> Vec<Match> {
    let mut names = Vec::new();
    let mut module = "";
    for statement in contract.split(';') {
        if let Some(m) = statement
            .rsplit("pub mod ")
            .next()
            .filter(|_| statement.contains("pub mod "))
        {
            module = m.split_whitespace().next().unwrap_or("");
        }
        let Some(definition) = statement.split("pub const ").nth(1) else {
            continue;
        };
        if !definition.contains(": &str") {
            continue;
        }
        let Some(value) = definition.split('"').nth(1) else {
            continue;
        };
        let value = if definition.contains("ferrolb_io!(") {
            format!("ferrolb.io/{value}")
        } else {
            value.to_string()
        };
        match module {
            "annotation" | "label" if value.contains('/') => names.push(Match::Substring(value)),
            "annotation" | "condition" | "reason" | "action" => names.push(Match::Literal(value)),
            _ => {}
        }
    }
    names
}

/// The (1-based line, name) of every contract name `text` spells on a code line.
pub fn spelled_names(text: &str, names: &[Match]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for name in names {
            let hit = match name {
                Match::Substring(s) => in_string(code, s),
                Match::Literal(s) => code.contains(&format!("\"{s}\"")),
            };
            if hit {
                let (Match::Substring(s) | Match::Literal(s)) = name;
                found.push((i + 1, s.clone()));
            }
        }
    }
    found
}

/// Whether `needle` stands inside a string literal of `line` (after an odd number of quotes).
fn in_string(line: &str, needle: &str) -> bool {
    let mut rest = line;
    let mut quotes = 0;
    while let Some(at) = rest.find(needle) {
        quotes += rest[..at].matches('"').count();
        if quotes % 2 == 1 {
            return true;
        }
        rest = &rest[at + needle.len()..];
    }
    false
}

/// Lines that are neither blank nor only a comment.
pub fn code_lines(text: &str) -> usize {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count()
}

fn has_long_file_reason(text: &str) -> bool {
    text.lines().take(30).any(|l| l.contains(LONG_FILE_MARK))
}

/// The `.rs` files git tracks or would track under `root`, outside `target/`.
fn rust_files(root: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("git")
        .current_dir(root)
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "*.rs",
        ])
        .output()
        .context("running git ls-files")?;
    if !output.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| root.join(l))
        .filter(|p| p.exists())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT_SAMPLE: &str = r#"
macro_rules! ferrolb_io { ($name:literal) => { concat!("ferrolb.io/", $name) }; }
pub const GROUP: &str = "ferrolb.io";
pub mod annotation {
    pub const REQUEST_PREFIXES: [&str; 2] = [ferrolb_io!(""), "metallb.io/"];
    pub const SUFFIX: &str = "address-pool";
    pub const POOL: &str = ferrolb_io!("address-pool");
}
pub mod label {
    pub const EXCLUDE: &str =
        "node.kubernetes.io/exclude";
}
pub mod reason {
    pub const ANNOUNCED: &str = "Announced";
}
pub mod field_manager {
    pub const SPEAKER: &str = "ferrolb-speaker";
}
"#;

    #[test]
    fn reads_each_kind_of_definition() {
        assert_eq!(
            contract_names(CONTRACT_SAMPLE),
            vec![
                Match::Literal("address-pool".into()),
                Match::Substring("ferrolb.io/address-pool".into()),
                Match::Substring("node.kubernetes.io/exclude".into()),
                Match::Literal("Announced".into()),
            ]
        );
    }

    #[test]
    fn finds_spelled_names_in_code_but_not_in_comments_or_identifiers() {
        let names = contract_names(CONTRACT_SAMPLE);
        let text = "// ferrolb.io/address-pool in a comment is fine\n\
                    let a = \"ferrolb.io/address-pool\";\n\
                    let m = format!(\"set ferrolb.io/address-pool: {x}\");\n\
                    let r = \"Announced\";\n\
                    let prose = \"it was Announced today\";\n\
                    let ident = ferrolb_io_address_pool;\n";
        let found = spelled_names(text, &names);
        let lines: Vec<usize> = found.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![2, 3, 4], "{found:?}");
    }

    #[test]
    fn counts_code_lines_only() {
        assert_eq!(
            code_lines("//! doc\n\nfn a() {}\n  // note\n  let x = 1;\n"),
            2
        );
        assert!(has_long_file_reason(
            "//! Codec.\n//! Longer than 600 lines because ...\n"
        ));
        assert!(!has_long_file_reason("//! Codec.\n"));
    }
}
