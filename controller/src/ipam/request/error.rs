//! Why a Service's request is malformed: one error type for every annotation and field ferrolb
//! reads, each message naming the field or annotation and the offending text.

use std::net::IpAddr;

use ferrolb_crds::Family;

/// A malformed request. Messages name the field or annotation and the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A port protocol Kubernetes does not know (its validation refuses them; read defensively).
    #[error("spec.ports[{index}].protocol: {value:?} is not TCP, UDP or SCTP")]
    UnknownProtocol {
        /// Position in `spec.ports`.
        index: usize,
        /// The protocol as written.
        value: String,
    },
    /// Two spellings of one annotation with different values.
    #[error("annotations {first}={first_value} and {second}={second_value} disagree; keep one")]
    ConflictingSpellings {
        /// First annotation name.
        first: String,
        /// Its value.
        first_value: String,
        /// Second annotation name.
        second: String,
        /// Its value.
        second_value: String,
    },
    /// Both `spec.loadBalancerIP` and the annotation.
    #[error(
        "spec.loadBalancerIP {field} and annotation {annotation}={value} are both set; keep only the annotation"
    )]
    BothForms {
        /// `spec.loadBalancerIP`.
        field: String,
        /// Annotation name.
        annotation: String,
        /// Its value.
        value: String,
    },
    /// An entry that is not an IP address.
    #[error("{source_name}: {value:?} is not an IP address")]
    NotAnIp {
        /// Field or annotation name.
        source_name: String,
        /// The entry.
        value: String,
    },
    /// Two addresses of one family.
    #[error(
        "{source_name} lists two {family} addresses ({first}, {second}); give at most one per family"
    )]
    TwoOfFamily {
        /// Field or annotation name.
        source_name: String,
        /// The family.
        family: Family,
        /// First address.
        first: IpAddr,
        /// Second address.
        second: IpAddr,
    },
    /// A requested address of a family the Service does not have.
    #[error("{source_name} requests {ip}, an {family} address, but spec.ipFamilies is {families}")]
    FamilyNotInService {
        /// Field or annotation name.
        source_name: String,
        /// The address.
        ip: IpAddr,
        /// Its family.
        family: Family,
        /// The Service's families, as written.
        families: String,
    },
    /// An annotation with an empty value (the field or annotation, as `annotation <name>`).
    #[error("{0} is empty; remove it or give a value")]
    Empty(String),
    /// A value longer than the text rules allow.
    #[error("{source_name} is {len} bytes long, over the 253-byte limit: {shown}")]
    TooLong {
        /// Field or annotation name.
        source_name: String,
        /// Its length in bytes.
        len: usize,
        /// The value, cut.
        shown: String,
    },
    /// A character other than printable ASCII (tabs, newlines, invisible or non-ASCII ones).
    #[error(
        "{source_name} holds {character:?} (U+{code:04X}); only printable ASCII is accepted, with spaces only around entries: {shown}",
        code = u32::from(*character)
    )]
    BadCharacter {
        /// Field or annotation name.
        source_name: String,
        /// The first such character.
        character: char,
        /// The value, cut.
        shown: String,
    },
    /// A space inside a single value.
    #[error("{source_name} has a space inside {shown}; it holds one value")]
    InnerSpace {
        /// Field or annotation name.
        source_name: String,
        /// The value, cut.
        shown: String,
    },
    /// A list with an empty element (`a,,b`, `a,`).
    #[error(
        "{source_name} has an empty element in {shown}: separate entries with single commas, with none at the end"
    )]
    EmptyElement {
        /// Field or annotation name.
        source_name: String,
        /// The value, cut.
        shown: String,
    },
    /// A list separated by something other than commas.
    #[error("{source_name} separates entries with {separator:?} in {shown}: use commas")]
    WrongSeparator {
        /// Field or annotation name.
        source_name: String,
        /// The separator found.
        separator: char,
        /// The value, cut.
        shown: String,
    },
    /// A list naming one entry twice.
    #[error("{source_name} lists {element} twice in {shown}")]
    Duplicate {
        /// Field or annotation name.
        source_name: String,
        /// The entry given twice.
        element: String,
        /// The value, cut.
        shown: String,
    },
    /// A pool name that no pool can have.
    #[error(
        "{source_name}: {shown} is not a pool name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
    )]
    NotAPoolName {
        /// Field or annotation name.
        source_name: String,
        /// The value, cut.
        shown: String,
    },
}
