//! A Service's `metadata.uid`, kept in 16 bytes when it is a UUID as the apiserver writes it
//! (the state machine keeps one per Service; a `String` costs 72 bytes).

use std::fmt;

/// A `metadata.uid`: prints back exactly as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uid {
    /// A lowercase hyphenated UUID (`8-4-4-4-12` hex digits), its 16 bytes.
    Uuid([u8; 16]),
    /// Anything else, as read.
    Other(Box<str>),
}

/// Where the hyphens of a hyphenated UUID are.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

impl Uid {
    /// Reads `uid`.
    pub fn new(uid: &str) -> Uid {
        Self::parse_uuid(uid).map_or_else(|| Uid::Other(uid.into()), Uid::Uuid)
    }

    fn parse_uuid(uid: &str) -> Option<[u8; 16]> {
        let text = uid.as_bytes();
        if text.len() != 36 || HYPHENS.iter().any(|&i| text[i] != b'-') {
            return None;
        }
        let mut digits = text
            .iter()
            .enumerate()
            .filter(|(i, _)| !HYPHENS.contains(i))
            .map(|(_, c)| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None, // Uppercase too: it would not print back the same.
            });
        let mut bytes = [0; 16];
        for byte in &mut bytes {
            *byte = (digits.next()?? << 4) | digits.next()??;
        }
        Some(bytes)
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uid::Other(s) => f.write_str(s),
            Uid::Uuid(bytes) => {
                for (i, b) in bytes.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        f.write_str("-")?;
                    }
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_kept_as_bytes_and_print_back_the_same() {
        let text = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
        let uid = Uid::new(text);
        assert!(matches!(uid, Uid::Uuid(_)));
        assert_eq!(uid.to_string(), text);
        assert_ne!(uid, Uid::new("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4e"));
    }

    #[test]
    fn anything_else_is_kept_as_text() {
        for text in [
            "",
            "uid-1",
            "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D",
            "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4",
            "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4dd",
            "0a1b2c3d04e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "0a1b2c3g-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3cé",
        ] {
            let uid = Uid::new(text);
            assert_eq!(uid, Uid::Other(text.into()), "{text}");
            assert_eq!(uid.to_string(), text);
        }
    }
}
