//! What goes into an image's single layer: the binaries in `/usr/local/bin`, the exact shared
//! libraries `ldd` reports for them (the real files, at the paths `ldd` prints, symlinks
//! resolved), a minimal `/etc/passwd` and `/etc/group`, and an empty `/tmp`. No shell, no package
//! manager, nothing else.
//!
//! [`parse_ldd`] and [`base_entries`] are pure; [`shared_libraries`] runs `ldd` and reads files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::oci::Entry;

/// Where the binaries go; the image's `PATH`.
pub const BIN_DIR: &str = "/usr/local/bin";

/// `root` and `nobody` (65534), the user images run as.
pub const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n";
/// `root` and `nogroup` (65534).
pub const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// The files every image has besides binaries and libraries.
pub fn base_entries() -> Vec<Entry> {
    vec![
        Entry::file("etc/passwd", 0o644, PASSWD),
        Entry::file("etc/group", 0o644, GROUP),
        Entry::dir("tmp", 0o1777),
    ]
}

/// A binary at `/usr/local/bin/<name>`, mode 0755.
pub fn binary_entry(name: &str, contents: Vec<u8>) -> Entry {
    Entry::file(
        &format!("{}/{name}", BIN_DIR.trim_start_matches('/')),
        0o755,
        contents,
    )
}

/// Absolute paths of the shared objects in `ldd` output, the dynamic loader included; the vDSO
/// (no path) is skipped. Fails when a library is `not found`.
///
/// ```text
///     linux-vdso.so.1 (0x00007ffd...)
///     libgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f...)
///     libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f...)
///     /lib64/ld-linux-x86-64.so.2 (0x00007f...)
/// ```
pub fn parse_ldd(output: &str) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    bail!("ldd: {} not found", name.trim());
                }
                target
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            paths.push(path.to_string());
        }
    }
    Ok(paths)
}

/// The shared libraries of `binaries` (union, in path order) as layer entries, mode 0755, each
/// the real file at the path `ldd` reported.
pub fn shared_libraries(binaries: &[PathBuf]) -> Result<Vec<Entry>> {
    let mut paths = BTreeSet::new();
    for binary in binaries {
        paths.extend(ldd(binary)?);
    }
    paths
        .into_iter()
        .map(|path| {
            // fs::read follows symlinks: the real file lands at the path ldd printed.
            let contents = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
            Ok(Entry::file(path.trim_start_matches('/'), 0o755, contents))
        })
        .collect()
}

/// Runs `ldd binary`. A static binary has no libraries.
fn ldd(binary: &Path) -> Result<Vec<String>> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd (Debian package libc-bin) to find shared libraries")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stdout.contains("statically linked") || stderr.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !output.status.success() {
        bail!(
            "ldd {} failed ({}): {stderr}{stdout}",
            binary.display(),
            output.status
        );
    }
    parse_ldd(&stdout).with_context(|| format!("shared libraries of {}", binary.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_and_loader_paths_but_not_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd3b5f2000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0c1c2a0000)\n\
                   \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0c1c1c0000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c1bfd0000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1d0b0000)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libm.so.6",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
        );
        let arm = "\tlinux-vdso.so.1 (0x0000ffff9a1d0000)\n\
                   \tlibc.so.6 => /lib/aarch64-linux-gnu/libc.so.6 (0x0000ffff99fe0000)\n\
                   \t/lib/ld-linux-aarch64.so.1 (0x0000ffff9a190000)\n";
        assert_eq!(
            parse_ldd(arm).unwrap(),
            [
                "/lib/aarch64-linux-gnu/libc.so.6",
                "/lib/ld-linux-aarch64.so.1"
            ]
        );
    }

    #[test]
    fn a_missing_library_is_an_error_naming_it() {
        let out =
            "\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x1)\n";
        let err = parse_ldd(out).unwrap_err().to_string();
        assert!(err.contains("libfoo.so.1 not found"), "{err}");
    }

    #[test]
    fn passwd_and_group_know_root_and_65534_only() {
        let ids = |text: &str, field: usize| -> Vec<String> {
            text.lines()
                .map(|l| l.split(':').nth(field).unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(PASSWD, 2), ["0", "65534"]);
        assert_eq!(ids(PASSWD, 3), ["0", "65534"]);
        assert_eq!(ids(GROUP, 2), ["0", "65534"]);
        assert_eq!(ids(GROUP, 0), ["root", "nogroup"]);
    }
}
