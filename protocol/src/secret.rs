//! Secret values on the wire and in memory. A `SecretValue` zeroes its bytes when dropped,
//! prints as `[redacted]` in `Debug` and `Display`, and refuses to serialize into a
//! human-readable format (JSON, TOML, logs): it crosses the wire only inside the binary
//! RPC frames, so it cannot end up in `--json` output or a log line by accident.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use zeroize::Zeroizing;

#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> SecretValue {
        SecretValue(Zeroizing::new(bytes))
    }

    /// The secret bytes. Every call site is a place where the value is really used.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue([redacted], {} bytes)", self.0.len())
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return Err(serde::ser::Error::custom(
                "refusing to serialize a secret value into a human-readable format",
            ));
        }
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SecretValue, D::Error> {
        let v: Vec<u8> = serde::de::Deserialize::deserialize(d)?;
        Ok(SecretValue::new(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_and_not_json_serializable() {
        let s = SecretValue::new(b"canary-123".to_vec());
        assert!(!format!("{s:?}").contains("canary"));
        assert!(!format!("{s}").contains("canary"));
        assert!(serde_json::to_string(&s).is_err());
        // The binary wire format carries it.
        let bytes = bincode_round_trip(&s);
        assert_eq!(bytes.expose(), b"canary-123");
    }

    fn bincode_round_trip(s: &SecretValue) -> SecretValue {
        use tokio_serde::{Deserializer as _, Serializer as _};
        let mut codec: tokio_serde::formats::Bincode<SecretValue, SecretValue> = Default::default();
        let b = std::pin::Pin::new(&mut codec).serialize(s).expect("ser");
        let mut codec: tokio_serde::formats::Bincode<SecretValue, SecretValue> = Default::default();
        std::pin::Pin::new(&mut codec)
            .deserialize(&bytes::BytesMut::from(&b[..]))
            .expect("de")
    }
}
