//! The text rules every annotation value and string field of a request passes before it means
//! anything (pure).
//!
//! - Printable ASCII only: a tab, a newline, a no-break or zero-width space, any control or
//!   non-ASCII character is refused with its code point, so two values that look alike are alike.
//! - Spaces only around a value or a list element (`a, b` is fine; `a b` is not a list).
//! - At most [`MAX_LEN`] bytes (a DNS subdomain's limit; two IPv6 addresses take 79).
//! - Lists are separated by single commas: no empty element, no trailing comma, no `;` or
//!   space-separated entries, no entry twice.
//!
//! Messages show the offending text cut to [`SHOWN_CHARS`] characters.

use super::RequestError;

/// The longest value accepted, in bytes.
pub const MAX_LEN: usize = 253;
/// How much of an offending value a message shows.
pub const SHOWN_CHARS: usize = 48;

/// `value` quoted for a message, cut to [`SHOWN_CHARS`] characters with the length when cut.
pub fn shown(value: &str) -> String {
    let count = value.chars().count();
    if count <= SHOWN_CHARS {
        return format!("{value:?}");
    }
    let cut: String = value.chars().take(SHOWN_CHARS).collect();
    format!("{cut:?}... ({} bytes)", value.len())
}

/// `value` of `source` (say `annotation ferrolb.io/address-pool`) without surrounding spaces;
/// refused when empty, too long or holding a character other than printable ASCII.
pub fn single<'a>(source: &str, value: &'a str) -> Result<&'a str, RequestError> {
    checked(source, value)?;
    let trimmed = value.trim_matches(' ');
    if trimmed.is_empty() {
        return Err(RequestError::Empty(source.to_owned()));
    }
    if trimmed.contains(' ') {
        return Err(RequestError::InnerSpace {
            source_name: source.to_owned(),
            shown: shown(value),
        });
    }
    Ok(trimmed)
}

/// The comma-separated elements of `value`, each without surrounding spaces; refused as
/// [`single`] refuses, and for an empty element, another separator or an element given twice
/// (compared as written; callers compare parsed values too).
pub fn list<'a>(source: &str, value: &'a str) -> Result<Vec<&'a str>, RequestError> {
    checked(source, value)?;
    if value.trim_matches(' ').is_empty() {
        return Err(RequestError::Empty(source.to_owned()));
    }
    let mut elements: Vec<&str> = Vec::new();
    for element in value.split(',').map(|e| e.trim_matches(' ')) {
        if element.is_empty() {
            return Err(RequestError::EmptyElement {
                source_name: source.to_owned(),
                shown: shown(value),
            });
        }
        if let Some(separator) = element.chars().find(|c| matches!(c, ' ' | ';' | '|')) {
            return Err(RequestError::WrongSeparator {
                source_name: source.to_owned(),
                separator,
                shown: shown(value),
            });
        }
        if elements.contains(&element) {
            return Err(RequestError::Duplicate {
                source_name: source.to_owned(),
                element: element.to_owned(),
                shown: shown(value),
            });
        }
        elements.push(element);
    }
    Ok(elements)
}

/// Whether `name` can be an object name: a DNS subdomain (RFC 1123) as Kubernetes checks it.
pub fn is_object_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-' || *b == b'.')
        && !name.contains("..")
}

/// Length and character rules shared by [`single`] and [`list`].
fn checked(source: &str, value: &str) -> Result<(), RequestError> {
    if value.len() > MAX_LEN {
        return Err(RequestError::TooLong {
            source_name: source.to_owned(),
            len: value.len(),
            shown: shown(value),
        });
    }
    if let Some(character) = value.chars().find(|c| *c != ' ' && !c.is_ascii_graphic()) {
        return Err(RequestError::BadCharacter {
            source_name: source.to_owned(),
            character,
            shown: shown(value),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "annotation example.com/list";

    #[test]
    fn lists_split_on_commas_with_optional_spaces() {
        assert_eq!(list(SRC, "a").unwrap(), ["a"]);
        assert_eq!(list(SRC, "a,b").unwrap(), ["a", "b"]);
        assert_eq!(list(SRC, " a ,  b ").unwrap(), ["a", "b"]);
    }

    #[test]
    fn empty_elements_are_refused_wherever_they_are() {
        for value in ["198.51.100.201,,", "a,,b", "a,", ",a", "a, ,b", ","] {
            let err = list(SRC, value).unwrap_err();
            assert!(
                matches!(err, RequestError::EmptyElement { .. }),
                "{value:?}: {err}"
            );
        }
        assert_eq!(
            list(SRC, "198.51.100.201,,").unwrap_err().to_string(),
            "annotation example.com/list has an empty element in \"198.51.100.201,,\": \
             separate entries with single commas, with none at the end"
        );
    }

    #[test]
    fn other_separators_are_refused_with_the_separator_named() {
        for (value, separator) in [("a b", ' '), ("a;b", ';'), ("a|b", '|'), ("a,b c", ' ')] {
            assert_eq!(
                list(SRC, value),
                Err(RequestError::WrongSeparator {
                    source_name: SRC.into(),
                    separator,
                    shown: format!("{value:?}"),
                })
            );
        }
        assert!(
            list(SRC, "a;b")
                .unwrap_err()
                .to_string()
                .contains("separates entries with ';'")
        );
    }

    #[test]
    fn an_element_given_twice_is_refused() {
        assert_eq!(
            list(SRC, "a, b,a"),
            Err(RequestError::Duplicate {
                source_name: SRC.into(),
                element: "a".into(),
                shown: "\"a, b,a\"".into(),
            })
        );
    }

    #[test]
    fn whitespace_games_and_invisible_characters_are_refused_by_code_point() {
        for (value, character) in [
            ("a,\tb", '\t'),
            ("a\n", '\n'),
            ("\u{a0}a", '\u{a0}'),
            ("a\u{200b}", '\u{200b}'),
            ("a\u{feff}", '\u{feff}'),
            ("\u{0}", '\u{0}'),
            ("é", 'é'),
        ] {
            let err = list(SRC, value).unwrap_err();
            assert!(
                matches!(err, RequestError::BadCharacter { character: c, .. } if c == character),
                "{value:?}: {err}"
            );
            assert!(single(SRC, value).is_err());
        }
        assert!(
            single(SRC, "a\u{200b}")
                .unwrap_err()
                .to_string()
                .contains("U+200B")
        );
    }

    #[test]
    fn overlong_values_are_refused_and_shown_cut() {
        let long = "1".repeat(MAX_LEN + 1);
        let err = list(SRC, &long).unwrap_err();
        assert!(matches!(err, RequestError::TooLong { len: 254, .. }));
        let message = err.to_string();
        assert!(message.contains("254 bytes"), "{message}");
        assert!(message.len() < 200, "{message}");
        assert!(single(SRC, &"a".repeat(MAX_LEN)).is_ok());
    }

    #[test]
    fn shown_cuts_long_values_at_a_character_boundary() {
        assert_eq!(shown("abc"), "\"abc\"");
        let long = "é".repeat(60);
        assert_eq!(shown(&long), format!("{:?}... (120 bytes)", "é".repeat(48)));
    }

    #[test]
    fn single_values_are_trimmed_of_spaces_only() {
        assert_eq!(single(SRC, "  web  ").unwrap(), "web");
        assert_eq!(single(SRC, " "), Err(RequestError::Empty(SRC.into())));
        assert!(matches!(
            single(SRC, "a b"),
            Err(RequestError::InnerSpace { .. })
        ));
    }

    #[test]
    fn object_names_are_dns_subdomains() {
        for ok in ["lan", "lan-2", "a.b", "0", &"a".repeat(253)] {
            assert!(is_object_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Lan",
            "-lan",
            "lan-",
            "a..b",
            "a_b",
            ".a",
            &"a".repeat(254),
        ] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }
}
