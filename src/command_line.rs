//! What every shell command shares (SPEC §16): its settings, from the
//! environment with the command's options on top, and the usage error.

use crate::config::{ConfigError, Settings};

/// A usage or configuration error of a command: said on standard error, exit status 2.
pub(crate) fn usage_error(message: &str) -> i32 {
    eprintln!("d365-trigger-relay: {message}\nRun `d365-trigger-relay --help` for the commands.");
    2
}

/// The settings of the environment (`D365_SECRET_FILE` standing in for the secret), with `overrides` (a command's options) on top of the environment.
pub(crate) fn settings_with(overrides: &[(&str, String)]) -> (Result<Settings, ConfigError>, Option<String>) {
    let file = std::env::var("D365_SECRET_FILE").ok().filter(|f| !f.trim().is_empty());
    let settings = Settings::from_lookup(|key| {
        let overridden = overrides.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
        let value = overridden.or_else(|| std::env::var(key).ok()).filter(|v| !v.trim().is_empty());
        match (key, &value, &file) {
            ("D365_SECRET_ID", None, Some(path)) => Some(format!("file:{path}")),
            _ => value,
        }
    });
    (settings, file)
}
