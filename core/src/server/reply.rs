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

/// An error response as the bytes of an HTTP/1.1 response that closes
/// the connection: for answers written to a socket hyper does not serve
/// (a head too large to parse, plain HTTP on the TLS port).
pub fn error_bytes(status: StatusCode, code: &str, message: &str, extra: Value) -> Vec<u8> {
    let body = error_body(code, message, extra).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
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
