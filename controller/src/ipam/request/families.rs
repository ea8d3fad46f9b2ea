//! The families a Service needs, primary first, kept inline: a `Vec` would cost 24 bytes and a
//! heap block per Service for one or two one-byte values.

use std::fmt;
use std::ops::Deref;

use ferrolb_crds::Family;

/// Up to two families (`spec.ipFamilies` has one or two), in order; reads as `&[Family]`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Families {
    list: [Family; 2],
    len: u8,
}

impl Families {
    /// No family.
    pub const NONE: Families = Families {
        list: [Family::V4; 2],
        len: 0,
    };
}

impl FromIterator<Family> for Families {
    /// The first two of `families` (the apiserver allows no more).
    fn from_iter<I: IntoIterator<Item = Family>>(families: I) -> Families {
        let mut out = Families::NONE;
        for family in families.into_iter().take(2) {
            out.list[usize::from(out.len)] = family;
            out.len += 1;
        }
        out
    }
}

impl From<Vec<Family>> for Families {
    fn from(families: Vec<Family>) -> Families {
        families.into_iter().collect()
    }
}

impl Deref for Families {
    type Target = [Family];

    fn deref(&self) -> &[Family] {
        &self.list[..usize::from(self.len)]
    }
}

impl fmt::Debug for Families {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_at_most_two() {
        assert!(Families::NONE.is_empty());
        let one = Families::from(vec![Family::V6]);
        assert_eq!(*one, [Family::V6]);
        let two = Families::from(vec![Family::V6, Family::V4]);
        assert_eq!(*two, [Family::V6, Family::V4]);
        assert_eq!(
            Families::from(vec![Family::V4, Family::V6, Family::V4]),
            Families::from(vec![Family::V4, Family::V6])
        );
        assert_ne!(one, two);
        assert_eq!(format!("{two:?}"), "[V6, V4]");
    }
}
