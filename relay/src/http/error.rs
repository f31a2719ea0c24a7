//! The one error type of the HTTP API, and the one place it becomes a response.
//!
//! Every failure a handler or a limit can produce is an `ApiError`; `into_response`
//! decides its status, headers and JSON body, so no handler formats an error itself and
//! no internal detail reaches the client.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

/// Seconds a client told "unavailable" should wait before retrying.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad query, body or header; the message tells the client what to fix.
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("request body larger than {bytes_max} bytes")]
    PayloadTooLarge { bytes_max: usize },
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// A bug or an unexpected failure; its detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
    #[error("{reason}")]
    Unavailable { reason: &'static str },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::TooManyRequests { .. } => "rate_limited",
            ApiError::Internal(_) => "internal_error",
            ApiError::Unavailable { .. } => "unavailable",
        }
    }

    /// The response for this error. Client mistakes are logged at debug, failures of
    /// the relay at error (with their detail, which the client does not see).
    pub fn into_response(self) -> Response<Full<Bytes>> {
        match &self {
            ApiError::Internal(detail) => tracing::error!(%detail, "HTTP API internal error"),
            other => {
                tracing::debug!(status = other.status().as_u16(), error = %other, "HTTP API request refused")
            }
        }
        let body = serde_json::json!({
            "error": {"code": self.code(), "message": self.to_string()}
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            ApiError::Unauthorized => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"sdk_relay\""),
                );
            }
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            ApiError::Unavailable { .. } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_show_their_detail() {
        let response = ApiError::Internal("db password is hunter2".into()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = format!("{:?}", response.body());
        assert!(!body.contains("hunter2"), "{body}");
        assert!(body.contains("internal_error"), "{body}");
    }

    #[test]
    fn each_refusal_carries_its_header() {
        let unauthorized = ApiError::Unauthorized.into_response();
        assert_eq!(
            unauthorized.headers()[WWW_AUTHENTICATE],
            "Basic realm=\"sdk_relay\""
        );
        let limited = ApiError::TooManyRequests {
            retry_after_secs: 7,
        }
        .into_response();
        assert_eq!(limited.headers()[RETRY_AFTER], "7");
        let unavailable = ApiError::Unavailable { reason: "x" }.into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.headers()[RETRY_AFTER], "5");
        let method = ApiError::MethodNotAllowed { allow: "POST" }.into_response();
        assert_eq!(method.headers()[ALLOW], "POST");
    }
}
