//! What a spec gives the program of an image that is not ours, beyond its command:
//! how each credential reaches it (API, file, variable), read-only files from the
//! operator's spec directory, and a workspace; their serde forms (a spec file, the store's
//! JSON, bincode on the wire).

use serde::{Deserialize, Serialize};

/// Where an agent's workspace is mounted in its container.
pub const WORKSPACE_IN_CONTAINER: &str = "/workspace";
/// At most this many `[[files]]`, each at most `MAX_FILE_BYTES`, all together at most
/// `MAX_FILES_BYTES` (a spec travels in one frame).
pub const MAX_FILES: usize = 64;
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
pub const MAX_FILES_BYTES: usize = 2 * 1024 * 1024;

/// One read-only file for the container: `source` is read by the CLI, relative to the
/// spec file's directory, and travels in `content`; `target` is where the program sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub source: String,
    pub target: String,
    /// The file's bytes (base64 in JSON and TOML); filled by the CLI from `source`.
    #[serde(default, with = "base64_bytes")]
    pub content: Vec<u8>,
}

/// `[workspace]`: the size of the agent's writable volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSpec {
    /// Its size in MiB: a write beyond it fails with "no space left on device".
    pub size_mb: u64,
}

/// Bytes as base64 text in human-readable formats, as bytes in bincode.
mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
        } else {
            s.serialize_bytes(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(serde::de::Error::custom)
        } else {
            Vec::<u8>::deserialize(d)
        }
    }
}

/// Where the tmpfs of `file` credentials is mounted in the container of an agent whose
/// image is not ours.
pub const SECRETS_DIR_IN_CONTAINER: &str = "/run/agenfleet/secrets";

/// One credential an agent needs, and how its program gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialUse {
    pub name: String,
    pub delivery: Delivery,
    /// For `env`: the variable's name; None: derived from the credential's name
    /// (`db-password` → `DB_PASSWORD`).
    pub var: Option<String>,
}

/// How a credential reaches the agent's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Through the local API (`GET /v1/credentials/NAME`) and the gateway; rotated in place.
    #[default]
    Api,
    /// A file of its own on a tmpfs (mode 0400); replaced atomically on rotation.
    File,
    /// A variable in the program's environment; on rotation the shim restarts the program
    /// (not the container).
    Env,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Api => "api",
            Delivery::File => "file",
            Delivery::Env => "env",
        }
    }
}

impl CredentialUse {
    /// A credential delivered through the API.
    pub fn api(name: &str) -> Self {
        CredentialUse {
            name: name.to_string(),
            delivery: Delivery::Api,
            var: None,
        }
    }

    /// The variable an `env` credential is put in.
    pub fn env_var(&self) -> String {
        self.var.clone().unwrap_or_else(|| {
            self.name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect()
        })
    }

    /// Where a `file` credential appears in the container.
    pub fn file_path(&self) -> String {
        format!("{SECRETS_DIR_IN_CONTAINER}/{}", self.name)
    }

    /// How it is delivered, for people: `api`, `file /run/agenfleet/secrets/x`, `env X`.
    pub fn describe(&self) -> String {
        match self.delivery {
            Delivery::Api => "api".into(),
            Delivery::File => format!("file {}", self.file_path()),
            Delivery::Env => format!("env {}", self.env_var()),
        }
    }
}

/// A spec file writes a credential as a plain name (delivered through the API) or as a
/// table `{ name, as, var }`; bincode carries all three fields.
mod credential_use_serde {
    use super::{CredentialUse, Delivery};
    use serde::de::{self, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        name: String,
        #[serde(rename = "as", default)]
        delivery: Delivery,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        var: Option<String>,
    }

    #[derive(Serialize, Deserialize)]
    struct Wire(String, Delivery, Option<String>);

    impl Serialize for CredentialUse {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if !s.is_human_readable() {
                return Wire(self.name.clone(), self.delivery, self.var.clone()).serialize(s);
            }
            if self.delivery == Delivery::Api && self.var.is_none() {
                // As the first version wrote it: the spec's hash stays the same.
                return s.serialize_str(&self.name);
            }
            Table {
                name: self.name.clone(),
                delivery: self.delivery,
                var: self.var.clone(),
            }
            .serialize(s)
        }
    }

    impl<'de> Deserialize<'de> for CredentialUse {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            if !d.is_human_readable() {
                let Wire(name, delivery, var) = Wire::deserialize(d)?;
                return Ok(CredentialUse {
                    name,
                    delivery,
                    var,
                });
            }
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = CredentialUse;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a credential name, or a table { name, as = \"api\"|\"file\"|\"env\", var }")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<CredentialUse, E> {
                    Ok(CredentialUse::api(v))
                }
                fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<CredentialUse, A::Error> {
                    let t = Table::deserialize(de::value::MapAccessDeserializer::new(m))?;
                    Ok(CredentialUse {
                        name: t.name,
                        delivery: t.delivery,
                        var: t.var,
                    })
                }
            }
            d.deserialize_any(V)
        }
    }
}
