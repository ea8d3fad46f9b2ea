//! Output (pure): text for people, with colour only when asked or on a terminal, or JSON/YAML
//! for scripts.

use std::fmt::Write;

use anyhow::Result;
use ferrolb_crds::membership_view::ViewSource;
use serde::Serialize;

use crate::explain::{Explanation, Verdict};
use crate::status::{Status, Usage};

/// `-o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Sentences and tables.
    Text,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Whether text gets ANSI colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Colour(pub bool);

impl Colour {
    /// `--color auto` decides by whether stdout is a terminal and `NO_COLOR` is unset.
    pub fn auto(is_terminal: bool, no_color: bool) -> Colour {
        Colour(is_terminal && !no_color)
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn good(self, text: &str) -> String {
        self.paint("32", text)
    }

    fn bad(self, text: &str) -> String {
        self.paint("31", text)
    }

    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// `value` as JSON or YAML.
pub fn structured(value: &impl Serialize, format: Format) -> Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
        _ => serde_yaml::to_string(value)?,
    })
}

/// Objects to apply: a YAML stream (`---` between documents), or with `-o json` a `List`.
pub fn manifests(objects: &[serde_json::Value], format: Format) -> Result<String> {
    if format == Format::Json {
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
        return Ok(serde_json::to_string_pretty(&list)? + "\n");
    }
    let docs: Result<Vec<String>, _> = objects.iter().map(serde_yaml::to_string).collect();
    Ok(docs?.join("---\n"))
}

/// An explanation in sentences: a mark per finding, the fixes indented under it.
pub fn explanation(e: &Explanation, colour: Colour) -> String {
    let mut out = String::new();
    let verdict = match e.verdict {
        Verdict::Serving => colour.good("serving"),
        Verdict::NotALoadBalancer => colour.bad("not a LoadBalancer Service"),
        Verdict::OtherClass => colour.bad("left to another load balancer"),
        Verdict::NoAddress => colour.bad("no EXTERNAL-IP"),
        Verdict::NotAnnounced => colour.bad("not announced"),
    };
    let _ = writeln!(out, "Service {}: {verdict}", e.service);
    for f in &e.findings {
        let mark = if f.ok {
            colour.good("ok")
        } else {
            colour.bad("!!")
        };
        let _ = writeln!(out, "  {mark} {}", f.sentence);
        for fix in &f.fixes {
            let _ = writeln!(out, "     {} {fix}", colour.dim("fix:"));
        }
    }
    out
}

fn usage(u: &Usage) -> String {
    if u.used == 0 && u.free == 0 {
        "-".to_string()
    } else {
        format!("{}/{}", u.used, u.used + u.free)
    }
}

/// Aligns `rows` (the first is the header) in columns two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
    out
}

/// The status as text: controller, speakers, pools, Services.
pub fn status(s: &Status, colour: Colour) -> String {
    let mut out = String::new();
    let leader = if s.controller.live {
        colour.good(&s.controller.describe())
    } else {
        colour.bad(&s.controller.describe())
    };
    let _ = writeln!(out, "Controller: {leader}");
    let ready = s.speakers.iter().filter(|p| p.ready).count();
    if s.speakers.is_empty() {
        let _ = writeln!(
            out,
            "Speakers: {}",
            colour.bad(
                "no speaker pod (label app.kubernetes.io/component=speaker) in ferrolb's namespace"
            )
        );
    } else {
        let _ = writeln!(out, "Speakers: {ready} of {} ready", s.speakers.len());
    }
    let mut rows = vec![vec![
        "NODE".to_string(),
        "POD".into(),
        "STATE".into(),
        "SEES ALIVE".into(),
    ]];
    for p in &s.speakers {
        let state = if p.ready {
            colour.good("Ready")
        } else {
            colour.bad(&p.state)
        };
        let sees = match (&p.membership, &p.membership_error) {
            (Some(view), _) if view.source == ViewSource::NodeFallback => {
                colour.bad(&format!("{} (from Node readiness)", view.live.join(",")))
            }
            (Some(view), _) => view.live.join(","),
            (None, Some(why)) => format!("? ({why})"),
            (None, None) => "?".into(),
        };
        rows.push(vec![p.node.clone(), p.pod.clone(), state, sees]);
    }
    out.push_str(&table(&rows));
    for problem in &s.membership_problems {
        let _ = writeln!(out, "  {}", colour.bad(problem));
    }
    let _ = writeln!(out, "Pools (used/total):");
    let mut rows = vec![vec![
        "POOL".to_string(),
        "IPv4".into(),
        "IPv6".into(),
        "PROBLEMS".into(),
    ]];
    for p in &s.pools {
        rows.push(vec![
            p.name.clone(),
            usage(&p.ipv4),
            usage(&p.ipv6),
            colour.bad(&p.problems.join("; ")),
        ]);
    }
    out.push_str(&table(&rows));
    let _ = writeln!(out, "LoadBalancer Services:");
    let mut rows = vec![vec![
        "SERVICE".to_string(),
        "EXTERNAL-IP".into(),
        "POOL".into(),
        "SINCE".into(),
        "ANNOUNCED".into(),
    ]];
    for svc in &s.services {
        let announced = if svc.serving {
            svc.announced.clone()
        } else {
            colour.bad(&svc.announced)
        };
        rows.push(vec![
            svc.service.clone(),
            if svc.addresses.is_empty() {
                "<pending>".to_string()
            } else {
                svc.addresses.join(",")
            },
            svc.pool.clone().unwrap_or_else(|| "-".into()),
            svc.since.clone().unwrap_or_else(|| "-".into()),
            announced,
        ]);
    }
    out.push_str(&table(&rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(Colour::auto(true, false).0);
        assert!(!Colour::auto(false, false).0);
        assert!(!Colour::auto(true, true).0);
        assert_eq!(Colour(false).bad("x"), "x");
        assert_eq!(Colour(true).bad("x"), "\x1b[31mx\x1b[0m");
    }

    #[test]
    fn tables_align_columns_and_trim_the_last() {
        let t = table(&[
            vec!["A".into(), "LONG HEADER".into()],
            vec!["wider".into(), "x".into()],
        ]);
        assert_eq!(t, "  A      LONG HEADER\n  wider  x\n");
    }
}
