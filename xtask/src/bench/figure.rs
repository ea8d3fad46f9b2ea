//! A headline figure against its goal, and how every section of the report prints figures and
//! numbers in Markdown.

use std::fmt::Write as _;

use serde::Serialize;

use super::procfs::round3;

/// One headline figure against its goal.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// What it is.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Unit.
    pub unit: String,
    /// The goal, as text (`<= 1.3`), or empty.
    pub goal: String,
    /// Whether the goal is met (`None`: no goal).
    pub met: Option<bool>,
}

impl Figure {
    /// A figure, its value rounded to 3 decimals.
    pub fn new(name: &str, value: f64, unit: &str, goal: &str, met: Option<bool>) -> Figure {
        Figure {
            name: name.into(),
            value: round3(value),
            unit: unit.into(),
            goal: goal.into(),
            met,
        }
    }
}

/// `| figure | value | goal | met |` and a row per figure.
pub fn table(s: &mut String, figures: &[Figure]) {
    let _ = writeln!(s, "| figure | value | goal | met |\n|---|---:|---|---|");
    for f in figures {
        let _ = writeln!(
            s,
            "| {} | {} {} | {} | {} |",
            f.name,
            fmt(f.value),
            f.unit,
            if f.goal.is_empty() { "-" } else { &f.goal },
            match f.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            }
        );
    }
}

/// A number for humans: up to 3 decimals, no trailing zeros; `-` for NaN (not measured).
pub fn fmt(x: f64) -> String {
    if x.is_nan() {
        return "-".into();
    }
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_short() {
        assert_eq!(fmt(1.5), "1.5");
        assert_eq!(fmt(2.0), "2");
        assert_eq!(fmt(0.1234), "0.123");
        assert_eq!(fmt(f64::NAN), "-");
    }

    #[test]
    fn figures_print_their_goal_and_whether_it_is_met() {
        let mut s = String::new();
        table(
            &mut s,
            &[
                Figure::new("ratio", 1.23456, "x", "<= 1.3", Some(true)),
                Figure::new("p99", 120.0, "ms", "< 100", Some(false)),
                Figure::new("peak", 30.5, "MiB", "", None),
            ],
        );
        assert_eq!(
            s,
            "| figure | value | goal | met |\n|---|---:|---|---|\n\
             | ratio | 1.235 x | <= 1.3 | yes |\n\
             | p99 | 120 ms | < 100 | **no** |\n\
             | peak | 30.5 MiB | - | - |\n"
        );
    }
}
