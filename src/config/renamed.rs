//! Settings read under an old name (SPEC §21.3): one warning line per process,
//! however often the settings are read.

use std::collections::BTreeSet;
use std::sync::Mutex;

static WARNED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// Logs once per process that `old` is read, and that `new` is its name now.
/// Returns whether this call logged.
pub(super) fn warn_once(old: &'static str, new: &'static str) -> bool {
    let first = crate::lock(&WARNED).insert(old);
    if first {
        tracing::warn!(setting = old, renamed = new, "{old} is read as {new}, its new name; rename it in the function's environment");
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_name_is_warned_of_once() {
        let first = warn_once("D365_TEST_OLD_NAME", "D365_TEST_NEW_NAME");
        assert!(first);
        assert!(!warn_once("D365_TEST_OLD_NAME", "D365_TEST_NEW_NAME"));
    }
}
