//! Names and their defaults: what an agent, tenant, project, operator or token may be
//! called, and the tenant and project used when a spec names none. A leaf: specs and wire
//! types both read it, so neither imports the other.

/// The tenant and project an agent is created in when its spec names none.
pub const DEFAULT_TENANT: &str = "default";
pub const DEFAULT_PROJECT: &str = "default";

/// Names of agents, tenants and projects: 1–40 of `a-z 0-9 -`, starting with a letter or
/// digit. They end up in container names, labels and file names, so they are strict.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} name is empty"));
    }
    if name.len() > 40 {
        return Err(format!("{what} name `{name}` is longer than 40 characters"));
    }
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok_chars || !first_ok {
        return Err(format!(
            "{what} name `{name}` may hold only a-z, 0-9 and '-', and must start with a letter or digit"
        ));
    }
    Ok(())
}
