//! The command line of the small test and bench programs: `--flag value` or `--flag=value`
//! pairs read one at a time, and the usual exit when they do not parse. Shared through
//! `#[path]`, standard library only, like `http1.rs`.

/// Flags read one at a time: [`Flags::next_flag`] gives the flag's name, [`Flags::value`] its
/// value (the part after `=`, else the next argument).
#[derive(Debug)]
pub struct Flags<I> {
    args: I,
    inline: Option<String>,
}

impl<I: Iterator<Item = String>> Flags<I> {
    /// The flags in `args` (the program's name already skipped).
    pub fn new(args: impl IntoIterator<IntoIter = I>) -> Self {
        Flags {
            args: args.into_iter(),
            inline: None,
        }
    }

    /// The next flag: the whole argument, or its part before the first `=`.
    pub fn next_flag(&mut self) -> Option<String> {
        let arg = self.args.next()?;
        Some(match arg.split_once('=') {
            Some((flag, value)) => {
                self.inline = Some(value.to_string());
                flag.to_string()
            }
            None => {
                self.inline = None;
                arg
            }
        })
    }

    /// The value of `flag`, the flag just read.
    pub fn value(&mut self, flag: &str) -> Result<String, String> {
        self.inline
            .take()
            .or_else(|| self.args.next())
            .ok_or_else(|| format!("{flag} needs a value"))
    }
}

/// The arguments `parsed`, or else prints the error (an empty one asks for the usage only, as
/// `--help` does) and `usage`, and exits 2.
pub fn parsed_or_exit<T>(program: &str, usage: &str, parsed: Result<T, String>) -> T {
    match parsed {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{program}: {e}");
            }
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn values_follow_the_flag_or_its_equals_sign() {
        let args = ["--a=1=2", "--b", "3", "--c"].map(String::from);
        let mut flags = Flags::new(args);
        assert_eq!(flags.next_flag().as_deref(), Some("--a"));
        assert_eq!(flags.value("--a").as_deref(), Ok("1=2"));
        assert_eq!(flags.next_flag().as_deref(), Some("--b"));
        assert_eq!(flags.value("--b").as_deref(), Ok("3"));
        assert_eq!(flags.next_flag().as_deref(), Some("--c"));
        assert_eq!(flags.value("--c"), Err("--c needs a value".to_string()));
        assert_eq!(flags.next_flag(), None);
    }
}
