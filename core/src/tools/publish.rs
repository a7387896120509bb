//! `switchyard publish TYPE 'PAYLOAD'`: posts one event to
//! `POST /api/events` and prints its stamp, `channel:epoch:sequence`.

use std::process::ExitCode;

use serde_json::{Map, Value};

/// What `publish` was asked to send, and where.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The router's base URL (`http://host:port`).
    pub url: String,
    /// The event type (a canonical name or an alias).
    pub event_type: String,
    /// The payload, as JSON text.
    pub payload: String,
    /// The publish key, sent as `Authorization: Bearer`.
    pub key: Option<String>,
    /// `correlation_id`, when given.
    pub correlation_id: Option<String>,
    /// `idempotency_key`, when given.
    pub idempotency_key: Option<String>,
}

/// Exit status when the router refused the event or could not be reached.
const REFUSED: u8 = 1;
/// Exit status when the command line is wrong (a payload that is not JSON,
/// an empty `--key`).
const USAGE: u8 = 2;

/// How to give this tool the key, for a refusal that asks for one.
const KEY_HINT: &str =
    "  hint: give the publish key with --key KEY or the SWITCHYARD_API_KEY environment variable";

/// Runs `publish`: 0 when accepted (the stamp on stdout), 1 when refused
/// or unreachable (why on stderr), 2 when the payload is not JSON or
/// `--key` is empty.
pub fn run(publish: &Publish) -> ExitCode {
    if let Err(e) = super::refuse_empty("--key", "SWITCHYARD_API_KEY", publish.key.as_deref()) {
        eprintln!("switchyard publish: {e}");
        return ExitCode::from(USAGE);
    }
    let body = match request_body(publish) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("switchyard publish: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard publish: cannot start the async runtime: {e}");
            return ExitCode::from(REFUSED);
        }
    };
    match runtime.block_on(post(publish, &body)) {
        Ok((202, reply)) => {
            for stamp in stamps(&reply) {
                println!("{stamp}");
            }
            ExitCode::SUCCESS
        }
        Ok((status, reply)) => {
            for line in refusal(status, &reply) {
                eprintln!("{line}");
            }
            ExitCode::from(REFUSED)
        }
        Err(e) => {
            eprintln!(
                "switchyard publish: cannot reach {}/api/events: {}",
                publish.url,
                super::with_causes(&e.without_url())
            );
            ExitCode::from(REFUSED)
        }
    }
}

/// The JSON body to post; an error when the payload is not JSON.
pub fn request_body(publish: &Publish) -> Result<Value, String> {
    let payload: Value = serde_json::from_str(&publish.payload).map_err(|e| {
        format!("the payload is not JSON ({e}); quote it for the shell, e.g. '{{\"id\":\"a1\"}}'")
    })?;
    let mut event = Map::new();
    event.insert("type".into(), Value::from(publish.event_type.as_str()));
    event.insert("payload".into(), payload);
    if let Some(id) = &publish.correlation_id {
        event.insert("correlation_id".into(), Value::from(id.as_str()));
    }
    if let Some(key) = &publish.idempotency_key {
        event.insert("idempotency_key".into(), Value::from(key.as_str()));
    }
    Ok(Value::Object(event))
}

async fn post(publish: &Publish, body: &Value) -> reqwest::Result<(u16, Value)> {
    let mut request = reqwest::Client::new()
        .post(format!("{}/api/events", publish.url))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(key) = &publish.key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let reply = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, reply))
}

/// `channel:epoch:sequence` for each stamped event of a 202 reply
/// (`channel:sequence` if the router gave no epoch).
pub fn stamps(reply: &Value) -> Vec<String> {
    let Some(sequences) = reply["sequences"].as_array() else {
        return vec![reply.to_string()];
    };
    sequences
        .iter()
        .map(|s| {
            let channel = s["channel"].as_str().unwrap_or("?");
            match s["epoch"].as_str() {
                Some(epoch) => format!("{channel}:{epoch}:{}", s["sequence"]),
                None => format!("{channel}:{}", s["sequence"]),
            }
        })
        .collect()
}

/// The lines that explain a refusal: status, code and message, then
/// `did_you_mean` and each invalid field; on a 401, how to give the key.
pub fn refusal(status: u16, reply: &Value) -> Vec<String> {
    let error = &reply["error"];
    let Some(code) = error["code"].as_str() else {
        return vec![format!(
            "switchyard publish: refused with HTTP {status}: {reply}"
        )];
    };
    let message = error["message"].as_str().unwrap_or("");
    let mut lines = vec![format!(
        "switchyard publish: refused (HTTP {status}) {code}: {message}"
    )];
    if let Some(name) = error["did_you_mean"].as_str() {
        lines.push(format!("  did_you_mean: {name}"));
    }
    for field in error["fields"].as_array().into_iter().flatten() {
        let name = field["field"].as_str().unwrap_or("?");
        let problem = field["problem"].as_str().unwrap_or("?");
        let mut line = format!("  field {name}: {problem}");
        if !field["expected"].is_null() {
            line.push_str(&format!(" (expected {})", field["expected"]));
        }
        lines.push(line);
    }
    if status == 401 {
        lines.push(KEY_HINT.to_owned());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn publish(payload: &str) -> Publish {
        Publish {
            url: "http://127.0.0.1:1".into(),
            event_type: "alert.created".into(),
            payload: payload.into(),
            key: None,
            correlation_id: Some("req-1".into()),
            idempotency_key: None,
        }
    }

    #[test]
    fn the_body_carries_type_payload_and_correlation_id() {
        let body = request_body(&publish(r#"{"id":"a1"}"#)).unwrap();
        assert_eq!(
            body,
            json!({"type":"alert.created","payload":{"id":"a1"},"correlation_id":"req-1"})
        );
    }

    #[test]
    fn a_payload_that_is_not_json_is_refused_locally() {
        let e = request_body(&publish("{id: a1}")).unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
    }

    #[test]
    fn stamps_and_refusals_are_readable() {
        let reply =
            json!({"accepted":1,"sequences":[{"channel":"alerts","sequence":42,"epoch":"k3"}]});
        assert_eq!(stamps(&reply), ["alerts:k3:42"]);
        let reply = json!({"error":{"code":"unknown_event_type","message":"no such type","did_you_mean":"alert.created"}});
        let lines = refusal(404, &reply);
        assert!(lines[0].contains("unknown_event_type"), "{lines:?}");
        assert_eq!(lines[1], "  did_you_mean: alert.created");
    }
}
