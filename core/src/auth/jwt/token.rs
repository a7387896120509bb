//! Token extraction: where a request carries its token, and how tokens
//! are kept out of log lines.

/// What replaces a token in redacted text.
const REDACTED: &str = "REDACTED";

/// Reads a token from the three sources, in this order: the `?token=` query
/// value, `Authorization: Bearer …`, `Sec-WebSocket-Protocol: bearer, <token>`.
/// Empty values count as absent; an `Authorization` header with another
/// scheme is ignored. (An offered `bearer` subprotocol is answered whichever
/// source the token came from: [`offers_bearer`].)
pub fn token_from(
    query_token: Option<&str>,
    authorization: Option<&str>,
    subprotocol: Option<&str>,
) -> Option<String> {
    if let Some(token) = query_token.map(str::trim).filter(|t| !t.is_empty()) {
        return Some(token.to_owned());
    }
    if let Some(token) = authorization.and_then(bearer_token) {
        return Some(token.to_owned());
    }
    let mut entries = subprotocol?.split(',').map(str::trim);
    entries.find(|e| e.eq_ignore_ascii_case("bearer"))?;
    entries.next().filter(|t| !t.is_empty()).map(str::to_owned)
}

/// Whether a `Sec-WebSocket-Protocol` value offers the `bearer`
/// subprotocol, which the server must then answer: a browser fails a
/// connection whose offered subprotocol is not answered, whatever the
/// auth mode and wherever the token was read from.
pub fn offers_bearer(subprotocol: Option<&str>) -> bool {
    subprotocol.is_some_and(|value| {
        value
            .split(',')
            .any(|entry| entry.trim().eq_ignore_ascii_case("bearer"))
    })
}

/// The credentials of an `Authorization: Bearer …` header value: the
/// scheme in any case (RFC 9110 §11.1), then white space, then a non-empty
/// token. Client tokens and API keys are both read with it.
pub(crate) fn bearer_token(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(|c: char| c.is_ascii_whitespace())?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Redacts tokens in text meant for logs: `token=abc.def.ghi` becomes
/// `token=REDACTED` (any `…token=` query parameter), and so do the token
/// after `Bearer ` / `bearer, ` (an `Authorization` or
/// `Sec-WebSocket-Protocol` value) and a JSON `"token":"…"` value. Every
/// occurrence is redacted; matching ignores ASCII case.
pub fn redact(text: &str) -> String {
    // ASCII lowercasing keeps byte offsets, so indexes found in `lower`
    // are valid in `text`; every match boundary is an ASCII byte.
    let lower = text.to_ascii_lowercase();
    let lower = lower.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < lower.len() {
        if let Some((start, end)) = secret_at(lower, i) {
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = end;
            i = end;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// The span of a secret whose marker starts at `i`, if one does.
fn secret_at(lower: &[u8], i: usize) -> Option<(usize, usize)> {
    let rest = &lower[i..];
    let span = |start: usize, stop: fn(u8) -> bool| {
        let len = lower[start..].iter().take_while(|b| !stop(**b)).count();
        (len > 0).then_some((start, start + len))
    };
    if rest.starts_with(b"token=") {
        return span(i + 6, |b| {
            b.is_ascii_whitespace() || b"&#\"'<>;,)]}".contains(&b)
        });
    }
    if rest.starts_with(b"\"token\"") {
        let mut j = i + 7;
        while lower.get(j).is_some_and(u8::is_ascii_whitespace) {
            j += 1;
        }
        if lower.get(j) != Some(&b':') {
            return None;
        }
        j += 1;
        while lower.get(j).is_some_and(u8::is_ascii_whitespace) {
            j += 1;
        }
        if lower.get(j) != Some(&b'"') {
            return None;
        }
        return span(j + 1, |b| b == b'"' || b == b'\\');
    }
    if rest.starts_with(b"bearer") {
        let mut j = i + 6;
        let sep = lower[j..]
            .iter()
            .take_while(|b| **b == b',' || **b == b' ' || **b == b'\t')
            .count();
        if sep == 0 {
            return None;
        }
        j += sep;
        return span(j, |b| {
            !(b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_tokens() {
        assert_eq!(redact("token=abc.def.ghi"), "token=REDACTED");
        assert_eq!(
            redact("GET /ws/events?events=alert.*&token=abc.def.ghi&x=1 HTTP/1.1"),
            "GET /ws/events?events=alert.*&token=REDACTED&x=1 HTTP/1.1"
        );
        assert_eq!(
            redact("a?token=one b?TOKEN=two#frag access_token=three"),
            "a?token=REDACTED b?TOKEN=REDACTED#frag access_token=REDACTED"
        );
        assert_eq!(
            redact("Sec-WebSocket-Protocol: bearer, eyJ.eyJ.sig_-x"),
            "Sec-WebSocket-Protocol: bearer, REDACTED"
        );
        assert_eq!(
            redact("authorization: Bearer eyJ.eyJ.sig"),
            "authorization: Bearer REDACTED"
        );
        assert_eq!(
            redact(r#"{"action":"refresh","token": "eyJ.eyJ.sig"}"#),
            r#"{"action":"refresh","token": "REDACTED"}"#
        );
        // Nothing to redact; empty values and non-ASCII text are kept.
        for text in [
            "token=",
            "bearer",
            "plain text, ünïcode",
            "subprotocol bearer,",
        ] {
            assert_eq!(redact(text), text);
        }
        assert_eq!(redact("é token=ü.x é"), "é token=REDACTED é");
        let once = redact("token=a bearer, b");
        assert_eq!(redact(&once), once);
    }

    #[test]
    fn token_sources_in_order() {
        let sub = Some("bearer, from-sub");
        assert_eq!(
            token_from(Some("from-query"), Some("Bearer from-auth"), sub),
            Some("from-query".into())
        );
        assert_eq!(
            token_from(None, Some("Bearer from-auth"), sub),
            Some("from-auth".into())
        );
        assert_eq!(
            token_from(Some(""), Some("bearer   from-auth "), sub),
            Some("from-auth".into())
        );
        assert_eq!(
            token_from(None, Some("Basic dXNlcjpwdw=="), sub),
            Some("from-sub".into())
        );
        assert_eq!(
            token_from(None, None, Some("chat, Bearer,from-sub")),
            Some("from-sub".into())
        );
        assert_eq!(token_from(None, None, Some("bearer")), None);
        assert_eq!(token_from(None, None, Some("chat")), None);
        assert_eq!(token_from(None, Some("Bearer "), None), None);
        assert_eq!(token_from(None, None, None), None);
    }

    #[test]
    fn an_offered_bearer_subprotocol_is_seen_with_or_without_a_token() {
        assert!(offers_bearer(Some("chat, Bearer, tok")));
        assert!(offers_bearer(Some("bearer")));
        assert!(!offers_bearer(Some("chat, bearer-ish")));
        assert!(!offers_bearer(None));
    }
}
