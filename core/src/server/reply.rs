//! JSON responses, including the `{"error":{"code","message",…}}` shape of
//! every HTTP error.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use super::Response;

/// A JSON response with this status.
pub fn json(status: StatusCode, body: &Value) -> Response {
    let mut response = http::Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An error body: `code`, `message`, plus any extra fields.
pub fn error_body(code: &str, message: &str, extra: Value) -> Value {
    let mut error = json!({"code": code, "message": message});
    if let (Value::Object(target), Value::Object(extra)) = (&mut error, extra) {
        target.extend(extra);
    }
    json!({ "error": error })
}

/// An error response.
pub fn error(status: StatusCode, code: &str, message: &str, extra: Value) -> Response {
    json(status, &error_body(code, message, extra))
}

/// Adds `Retry-After` (seconds), to a response of any body type.
pub fn retry_after<B>(mut response: http::Response<B>, seconds: u64) -> http::Response<B> {
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}
