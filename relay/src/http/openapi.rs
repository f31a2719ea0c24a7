//! The OpenAPI description served at `GET /openapi.json`: `docs/openapi.yaml`, compiled
//! into the binary and converted to JSON once, so the served document is the reviewed
//! file itself and cannot drift from it.

use std::sync::OnceLock;

use serde_json::Value;

use super::error::ApiError;

/// The source of truth, as reviewed in the repository.
pub const OPENAPI_YAML: &str = include_str!("../../../docs/openapi.yaml");

/// The parsed document.
///
/// # Errors
/// `Internal` if the embedded YAML does not parse (a test keeps it parsing).
pub fn document() -> Result<&'static Value, ApiError> {
    static DOCUMENT: OnceLock<Result<Value, String>> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| serde_norway::from_str(OPENAPI_YAML).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| ApiError::Internal(format!("docs/openapi.yaml does not parse: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_description_parses_as_openapi_3() {
        let document = super::document().expect("docs/openapi.yaml parses");
        assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    }
}
