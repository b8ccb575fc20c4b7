//! Who may use the API: named keys with a role, from `ALERTING_API_KEY`
//! (a responder key named `api-key`), `ALERTING_READ_KEY` (`read-key`) and
//! a keys file of named entries that holds only each key's SHA-256.
//!
//! With no key at all the API is open, which start-up allows only on a
//! loopback address (the embedded laptop default). A presented key is
//! hashed and compared against every known digest in constant time, so
//! neither a key's length nor its content can be learnt from timing.

use std::{fmt, path::Path};

use rand::TryRngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Shorter keys are refused at start: 32 bytes of a random key are far out
/// of reach of guessing, whatever the rate.
pub const MIN_KEY_BYTES: usize = 32;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every GET route.
    Read,
    /// Reads, and changes: ack, resolve, notes, events, silences.
    Responder,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Responder => "responder",
        }
    }

    pub fn may_change(self) -> bool {
        self == Role::Responder
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Role::Read),
            "responder" => Ok(Role::Responder),
            other => Err(format!("role must be read or responder, not {other:?}")),
        }
    }
}

/// A key the server knows: its name, its role and its SHA-256.
struct Known {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// Whoever a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's name; `None` on an API without keys.
    pub key: Option<String>,
    pub role: Role,
}

/// Why the keys cannot be used; every message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{setting} is {len} bytes; keys must be at least {MIN_KEY_BYTES} (`alerting keys new` makes one)")]
    TooShort { setting: &'static str, len: usize },
    #[error("ALERTING_READ_KEY is the same key as ALERTING_API_KEY: a read key must differ from the responder key")]
    Same,
    #[error("{0}: cannot read the keys file (ALERTING_KEYS_FILE): {1}")]
    Read(String, std::io::Error),
    #[error("{at}: {message}")]
    File { at: String, message: String },
}

/// The keys of a running server.
pub struct Keys {
    known: Vec<Known>,
}

impl fmt::Debug for Keys {
    /// Names and roles only: digests are not secret, but they are nobody's business either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.known.iter().map(|k| (&k.name, k.role.as_str()))).finish()
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl Keys {
    /// No key: an open API.
    pub fn none() -> Self {
        Keys { known: Vec::new() }
    }

    /// The keys from the settings; blank values count as unset.
    pub fn load(api_key: Option<&str>, read_key: Option<&str>, file: Option<&Path>) -> Result<Self, KeyError> {
        let mut known = Vec::new();
        for (setting, name, role, value) in [
            ("ALERTING_API_KEY", "api-key", Role::Responder, api_key),
            ("ALERTING_READ_KEY", "read-key", Role::Read, read_key),
        ] {
            let Some(value) = value.filter(|v| !v.trim().is_empty()) else { continue };
            if value.len() < MIN_KEY_BYTES {
                return Err(KeyError::TooShort { setting, len: value.len() });
            }
            let digest = digest(value.as_bytes());
            if known.iter().any(|k: &Known| k.digest == digest) {
                return Err(KeyError::Same);
            }
            known.push(Known { name: name.into(), role, digest });
        }
        if let Some(path) = file {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read(origin.clone(), e))?;
            for entry in parse_file(&origin, &text)? {
                if let Some(same) = known.iter().find(|k| k.name == entry.name || k.digest == entry.digest) {
                    return Err(KeyError::File {
                        at: format!("{origin}:{}", entry.line),
                        message: format!("key `{}` repeats the name or the key of `{}`", entry.name, same.name),
                    });
                }
                known.push(entry.known());
            }
        }
        Ok(Keys { known })
    }

    /// Whether any key is configured (then every API route needs one).
    pub fn required(&self) -> bool {
        !self.known.is_empty()
    }

    /// The key `presented` belongs to, if any. Every known digest is
    /// compared, in constant time, whatever matched first.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let given = digest(presented.as_bytes());
        let mut found = None;
        for known in &self.known {
            if same_digest(&known.digest, &given) {
                found = Some(Principal { key: Some(known.name.clone()), role: known.role });
            }
        }
        found
    }
}

/// Both sides are 32 bytes whatever the key, and every byte is looked at:
/// the time taken says nothing about where two digests differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.ct_eq(b).into()
}

/// One entry of the keys file, as `alerting keys new` prints it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    role: String,
    sha256: String,
}

struct Entry {
    line: usize,
    name: String,
    role: Role,
    digest: [u8; 32],
}

impl Entry {
    fn known(self) -> Known {
        Known { name: self.name, role: self.role, digest: self.digest }
    }
}

/// The file is a YAML list; an entry's line is the line of its `- `.
fn parse_file(origin: &str, text: &str) -> Result<Vec<Entry>, KeyError> {
    let raw: Option<Vec<RawEntry>> = serde_norway::from_str(text).map_err(|e| {
        let (at, message) = yamlerr::locate(&e, origin, 0);
        KeyError::File {
            at: at.to_string(),
            message: format!("not a list of {{name, role, sha256}} entries: {message}"),
        }
    })?;
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| l.starts_with('-')).map(|(i, _)| i).collect();
    let mut entries: Vec<Entry> = Vec::new();
    for (i, raw) in raw.unwrap_or_default().into_iter().enumerate() {
        let start = starts.get(i).copied().unwrap_or(0);
        let end = starts.get(i + 1).copied().unwrap_or(lines.len());
        // The 1-based line of `field` in this entry (else the entry's own).
        let line_of = |field: &str| {
            let key = format!("{field}:");
            (start..end).find(|&n| lines[n].trim_start_matches(['-', ' ']).starts_with(&key)).unwrap_or(start) + 1
        };
        let fail =
            |field: &str, message: String| KeyError::File { at: format!("{origin}:{}", line_of(field)), message };
        if !valid_name(&raw.name) {
            return Err(fail("name", format!("key name {:?} must be 1 to 64 of a-z, 0-9, `.`, `_`, `-`", raw.name)));
        }
        let role: Role = raw.role.parse().map_err(|e: String| fail("role", format!("key `{}`: {e}", raw.name)))?;
        let digest = parse_hex(&raw.sha256).ok_or_else(|| {
            fail(
                "sha256",
                format!("key `{}`: sha256 must be 64 hex digits (the key's SHA-256, never the key)", raw.name),
            )
        })?;
        let line = start + 1;
        if let Some(same) = entries.iter().find(|e| e.name == raw.name || e.digest == digest) {
            return Err(fail(
                "name",
                format!("key `{}` repeats the name or the key of `{}` (line {})", raw.name, same.name, same.line),
            ));
        }
        entries.push(Entry { line, name: raw.name, role, digest });
    }
    Ok(entries)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b))
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new random key and its keys-file entry.
pub struct NewKey {
    pub key: String,
    pub entry: String,
}

/// Starts every generated key: a key never begins with `-` (which a
/// command line would take for a flag), and a leaked one is easy to grep.
pub const KEY_PREFIX: &str = "alk_";

/// 32 random bytes from the OS generator, as unpadded URL-safe base64
/// after [`KEY_PREFIX`] (47 characters), with the entry that names it.
pub fn new_key(name: &str, role: Role) -> Result<NewKey, String> {
    use base64::Engine;
    if !valid_name(name) {
        return Err(format!("key name {name:?} must be 1 to 64 of a-z, 0-9, `.`, `_`, `-`"));
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(|e| format!("the OS random generator failed: {e}"))?;
    let key = format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let hex: String = digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    Ok(NewKey { entry: format!("- name: {name}\n  role: {}\n  sha256: {hex}\n", role.as_str()), key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_authenticates_as_its_name_and_a_near_miss_does_not() {
        let key = "k".repeat(40);
        let keys = Keys::load(Some(&key), None, None).unwrap();
        assert_eq!(keys.authenticate(&key), Some(Principal { key: Some("api-key".into()), role: Role::Responder }));
        assert_eq!(keys.authenticate(&key[1..]), None);
        assert_eq!(keys.authenticate(""), None);
    }

    #[test]
    fn a_generated_entry_parses_and_matches_its_key() {
        let made = new_key("kim", Role::Read).unwrap();
        assert!(made.key.len() >= MIN_KEY_BYTES && made.key.starts_with(KEY_PREFIX));
        let entries = parse_file("keys.yaml", &format!("# ops\n{}", made.entry)).unwrap();
        assert_eq!((entries[0].line, entries[0].role), (2, Role::Read));
        assert_eq!(entries[0].digest, digest(made.key.as_bytes()));
        assert!(!made.entry.contains(&made.key));
    }
}
