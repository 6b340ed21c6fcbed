//! The rules every message obeys on the way in: a JSON object, at most [`MAX_PAYLOAD`] bytes,
//! checked by its type's [`Validate`] after serde has checked its shape, so a handler only ever
//! sees a well-formed request and a caller gets a clear message naming the bad field.
//!
//! Contract types live in the domain's own crate; they implement [`Validate`] and derive
//! `serde` and `schemars::JsonSchema`, so every message has a JSON Schema other languages read.
//!
//! ```
//! use switchyard::contract::{ContractError, Validate, decode};
//!
//! #[derive(Debug, serde::Deserialize)]
//! struct Greet {
//!     name: String,
//! }
//!
//! impl Validate for Greet {
//!     fn validate(&self) -> Result<(), ContractError> {
//!         if self.name.trim().is_empty() {
//!             return Err(ContractError::Invalid("name must not be empty".into()));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! assert_eq!(decode::<Greet>(br#"{"name":"Ada"}"#).unwrap().name, "Ada");
//! assert_eq!(decode::<Greet>(br#"{"name":" "}"#).unwrap_err().to_string(), "name must not be empty");
//! assert!(decode::<Greet>(b"[1]").is_err());
//! ```

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The largest request payload a service decodes, in bytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Why a payload was refused. The message is meant for the caller: it names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContractError {
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes is larger than the limit of {MAX_PAYLOAD} bytes")]
    TooLarge(usize),
    /// The payload is not JSON of the expected shape.
    #[error("invalid json: {0}")]
    Json(String),
    /// The JSON has the right shape but a value breaks a rule.
    #[error("{0}")]
    Invalid(String),
}

/// A request type that checks its own values after serde has checked its shape.
pub trait Validate {
    /// Returns the first rule the value breaks, as a message naming the field.
    fn validate(&self) -> Result<(), ContractError>;
}

/// Decodes and validates a request payload.
pub fn decode<T: DeserializeOwned + Validate>(payload: &[u8]) -> Result<T, ContractError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(ContractError::TooLarge(payload.len()));
    }
    // Every contract message is a JSON object. Serde would also fill a struct from an array,
    // by position (`["u1", null, [...]]`); the contract has no such form.
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(first) => {
            let found = match first {
                b'[' => "an array",
                b'"' => "a string",
                b'n' => "null",
                b't' | b'f' => "a boolean",
                b'-' | b'0'..=b'9' => "a number",
                _ => "not JSON",
            };
            return Err(ContractError::Json(format!("invalid type: {found}, expected a JSON object")));
        }
    }
    let value: T = serde_json::from_slice(payload).map_err(|e| ContractError::Json(e.to_string()))?;
    value.validate()?;
    Ok(value)
}

/// The JSON body of every micro error reply on NATS (with the headers `Nats-Service-Error` and
/// `Nats-Service-Error-Code`). HTTP errors are the HTTP service's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// The micro error code: 400 bad request, 404 unknown, 409 conflict, 500 internal.
    pub code: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        n: u32,
    }

    impl Validate for Probe {
        fn validate(&self) -> Result<(), ContractError> {
            if self.n > 10 {
                return Err(ContractError::Invalid("n must be at most 10".into()));
            }
            Ok(())
        }
    }

    #[test]
    fn only_a_json_object_decodes() {
        let array = decode::<Probe>(b" []").unwrap_err();
        assert_eq!(array.to_string(), "invalid json: invalid type: an array, expected a JSON object");
        assert!(decode::<Probe>(b"null").unwrap_err().to_string().contains("null"));
        assert!(decode::<Probe>(b"{}").is_ok());
    }

    #[test]
    fn a_broken_rule_and_an_oversized_payload_are_refused() {
        assert_eq!(decode::<Probe>(br#"{"n":11}"#).unwrap_err().to_string(), "n must be at most 10");
        let big = vec![b' '; MAX_PAYLOAD + 1];
        assert_eq!(decode::<Probe>(&big).unwrap_err(), ContractError::TooLarge(MAX_PAYLOAD + 1));
    }
}
