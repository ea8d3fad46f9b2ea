//! One shared copy of each pool name that Services ask for: at 100,000 Services over 1,000
//! pools, 1,000 strings instead of 100,000.

use std::collections::HashSet;
use std::sync::Arc;

/// Shared names.
#[derive(Debug, Default)]
pub struct Names(HashSet<Arc<str>>);

impl Names {
    /// The shared copy of `name` (`name` itself when it is the first).
    pub fn share(&mut self, name: &Arc<str>) -> Arc<str> {
        if let Some(shared) = self.0.get(&**name) {
            return Arc::clone(shared);
        }
        self.0.insert(Arc::clone(name));
        Arc::clone(name)
    }

    /// Forgets the names nobody else holds any more.
    pub fn forget_unused(&mut self) {
        self.0.retain(|name| Arc::strong_count(name) > 1);
        self.0.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_share_one_copy_until_nobody_holds_it() {
        let mut names = Names::default();
        let first = names.share(&Arc::from("p"));
        let second = names.share(&Arc::from("p"));
        assert!(Arc::ptr_eq(&first, &second));
        let other = names.share(&Arc::from("q"));
        assert!(!Arc::ptr_eq(&first, &other));
        drop(other);
        names.forget_unused();
        assert_eq!(names.0.len(), 1, "q is held by nobody");
        drop((first, second));
        names.forget_unused();
        assert!(names.0.is_empty());
    }
}
