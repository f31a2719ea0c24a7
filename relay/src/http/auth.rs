//! HTTP basic authentication for the operator endpoints, compared in constant time so
//! the time an answer takes says nothing about how much of a guess was right.

use base64::Engine as _;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;

use super::error::ApiError;
use crate::config::AuthConfig;

/// The expected `user:password`, when `[auth] http_basic_user/password` are both set.
pub struct BasicAuth {
    expected: Option<Vec<u8>>,
}

impl BasicAuth {
    pub fn new(config: &AuthConfig) -> Self {
        let expected = match (&config.http_basic_user, &config.http_basic_password) {
            (Some(user), Some(password)) => Some(format!("{user}:{password}").into_bytes()),
            _ => None,
        };
        BasicAuth { expected }
    }

    /// # Errors
    /// `Unauthorized` when credentials are required and missing or wrong.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.expected else {
            return Ok(());
        };
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Basic "))
            .and_then(|encoded| {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
            })
            .unwrap_or_default();
        if crate::secret::matches(expected, &presented) {
            Ok(())
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn accepts_only_the_configured_pair() {
        let auth = BasicAuth::new(&AuthConfig {
            http_basic_user: Some("op".into()),
            http_basic_password: Some("secret".into()),
            ..AuthConfig::default()
        });
        // "op:secret", "op:secreT", "op:secret2"
        assert!(auth.check(&headers("Basic b3A6c2VjcmV0")).is_ok());
        assert!(auth.check(&headers("Basic b3A6c2VjcmVU")).is_err());
        assert!(auth.check(&headers("Basic b3A6c2VjcmV0Mg==")).is_err());
        assert!(auth.check(&headers("Bearer b3A6c2VjcmV0")).is_err());
        assert!(auth.check(&HeaderMap::new()).is_err());
        assert!(
            BasicAuth::new(&AuthConfig::default())
                .check(&HeaderMap::new())
                .is_ok()
        );
    }
}
