//! The HTTP error type: every variant documents its status, and every error body is JSON
//! `{"error": "<code>", "message": "..."}`. Internal details are logged, never sent.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use contracts::HttpErrorBody;

/// A JSON response body that ends with a newline, so that a terminal's prompt does not land
/// on the same line as `curl`'s output.
#[derive(Debug, Clone)]
pub struct JsonLine<T>(pub T);

impl<T: serde::Serialize> IntoResponse for JsonLine<T> {
    fn into_response(self) -> Response {
        let json = HeaderValue::from_static("application/json");
        match serde_json::to_vec(&self.0) {
            Ok(mut body) => {
                body.push(b'\n');
                ([(header::CONTENT_TYPE, json)], body).into_response()
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot serialize a response body");
                let body = "{\"error\":\"internal_error\",\"message\":\"internal error\"}\n";
                (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, json)], body).into_response()
            }
        }
    }
}

/// An HTTP error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON, or a header or path value is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such order or route.
    #[error("not found")]
    NotFound,
    /// 405: the route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: some items are out of stock; nothing was reserved.
    #[error("out of stock")]
    OutOfStock(Vec<String>),
    /// 422: some items are not in the catalogue at all; nothing was reserved.
    #[error("unknown SKUs: {}", .0.join(", "))]
    UnknownSku(Vec<String>),
    /// 409: the request conflicts with earlier ones (an abandoned idempotency key).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than the limit.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    #[error("expected a request with Content-Type: application/json")]
    UnsupportedMediaType,
    /// 422: the JSON is well-formed but a value breaks a rule, or an idempotency key is reused.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// 500: something broke inside; the detail is logged.
    #[error("internal error")]
    Internal(String),
    /// 503 with `Retry-After`: inventory is unavailable (breaker open, timeout, no responders).
    #[error("inventory is unavailable, retry later")]
    InventoryUnavailable { retry_after: Duration },
    /// 429 with `Retry-After`: this user or peer sent more than its rate limit allows.
    #[error("too many orders from this client, retry later")]
    RateLimited { retry_after: Duration },
    /// 503: the request took longer than the server's request timeout.
    #[error("the request timed out")]
    Timeout,
    /// 503 with `Retry-After`: the instance already handles `--http-max-in-flight` requests.
    #[error("the service is at capacity, retry later")]
    Overloaded,
    /// 408: the client did not send its body within `--http-body-timeout`.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// Any other error status, from the framework (say, a path that is not UTF-8), in the same
    /// JSON shape as every other error.
    #[error("{message}")]
    Status { status: StatusCode, message: String },
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::OutOfStock(_) | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } | ApiError::UnknownSku(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::InventoryUnavailable { .. } | ApiError::Timeout | ApiError::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Status { status, .. } => *status,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::OutOfStock(_) => "out_of_stock",
            ApiError::UnknownSku(_) => "unknown_sku",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unprocessable { code, .. } => code,
            ApiError::Internal(_) => "internal_error",
            ApiError::InventoryUnavailable { .. } => "inventory_unavailable",
            ApiError::Timeout => "timeout",
            ApiError::Overloaded => "overloaded",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Status { status, .. } => code_for_status(*status),
        }
    }
}

/// The error code of a status that no variant above names.
fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        status if status.is_client_error() => "bad_request",
        _ => "internal_error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "request failed");
        }
        let body = HttpErrorBody {
            error: self.code().to_string(),
            message: self.to_string(),
            unavailable_ids: match &self {
                ApiError::OutOfStock(ids) => Some(ids.clone()),
                _ => None,
            },
            unknown_ids: match &self {
                ApiError::UnknownSku(ids) => Some(ids.clone()),
                _ => None,
            },
        };
        let mut response = (self.status(), JsonLine(body)).into_response();
        let retry_after = match &self {
            ApiError::InventoryUnavailable { retry_after } | ApiError::RateLimited { retry_after } => {
                Some(*retry_after)
            }
            ApiError::Overloaded => Some(Duration::from_secs(1)),
            _ => None,
        };
        if let Some(retry_after) = retry_after {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
