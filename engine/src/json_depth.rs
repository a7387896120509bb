//! A pre-parse bound on JSON nesting depth.
//!
//! serde_json stops at a fixed recursion limit of 128 that cannot be
//! configured, so the router scans raw bytes against
//! `server.max_json_depth` before handing them to serde_json. The scan only
//! tracks brackets and strings; serde_json still does the real validation
//! afterwards, so malformed input that passes here is refused there.

/// JSON nested deeper than the configured limit, with the position of the
/// bracket that crossed it.
///
/// `line` and `column` are 1-based; `column` counts bytes from the start of
/// the line, as serde_json's `Error::column` does for in-memory input, so
/// both kinds of error point at positions the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JSON nested deeper than {max} levels at line {line}, column {column}")]
pub struct TooDeep {
    /// The depth limit that was exceeded.
    pub max: usize,
    /// The 1-based line of the offending `[` or `{`.
    pub line: usize,
    /// The 1-based byte column of the offending `[` or `{`.
    pub column: usize,
}

/// Refuses `bytes` if its arrays and objects nest deeper than `max`.
///
/// Depth counts open arrays and objects: `{}` and `[1]` are depth 1,
/// `{"a":[1]}` is depth 2, and a bare scalar (`3`, `"x"`) is depth 0 since
/// it nests nothing; so `max = 0` admits only scalars. Brackets inside
/// strings are ignored, honouring backslash escapes. One linear pass, no
/// allocation.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    let mut in_string = false;
    // Set after a backslash inside a string: the next byte is escaped.
    let mut escaped = false;
    let mut line = 1usize;
    let mut line_start = 0usize;
    for (index, &byte) in bytes.iter().enumerate() {
        if byte == b'\n' {
            // Counted even inside strings (where JSON forbids raw newlines)
            // so positions stay right on the input serde_json will reject.
            line += 1;
            line_start = index + 1;
            escaped = false;
            continue;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(TooDeep {
                        max,
                        line,
                        column: index - line_start + 1,
                    });
                }
            }
            // Saturating: unbalanced closers are serde_json's to report.
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert_eq!(check_depth(b"{}", 1), Ok(()));
        assert!(check_depth(b"{}", 0).is_err());
        assert_eq!(check_depth(br#"{"a":[1]}"#, 2), Ok(()));
        assert_eq!(
            check_depth(br#"{"a":[1]}"#, 1),
            Err(TooDeep {
                max: 1,
                line: 1,
                column: 6
            })
        );
    }

    #[test]
    fn scalars_have_depth_zero() {
        for scalar in [&b"3"[..], b"\"x\"", b"true", b"null", b""] {
            assert_eq!(check_depth(scalar, 0), Ok(()));
        }
    }

    #[test]
    fn exactly_the_limit_passes_and_one_more_fails() {
        assert_eq!(check_depth(nested(32).as_bytes(), 32), Ok(()));
        assert_eq!(
            check_depth(nested(33).as_bytes(), 32),
            Err(TooDeep {
                max: 32,
                line: 1,
                column: 33
            })
        );
    }

    #[test]
    fn siblings_do_not_add_up() {
        let input = r#"[[1],[2],{"a":[3]},[[4]]]"#;
        assert_eq!(check_depth(input.as_bytes(), 3), Ok(()));
        assert!(check_depth(input.as_bytes(), 2).is_err());
    }

    #[test]
    fn position_is_reported_on_multi_line_input() {
        let input = "{\n  \"a\": {\n    \"b\": [\n      {\"c\": 1}\n    ]\n  }\n}\n";
        assert_eq!(check_depth(input.as_bytes(), 4), Ok(()));
        let err = check_depth(input.as_bytes(), 3).unwrap_err();
        assert_eq!(
            err,
            TooDeep {
                max: 3,
                line: 4,
                column: 7
            }
        );
        assert_eq!(
            err.to_string(),
            "JSON nested deeper than 3 levels at line 4, column 7"
        );
    }

    #[test]
    fn columns_count_bytes_like_serde_json() {
        // "é" is two bytes, so the `[` is at byte column 16 (character 15).
        let input = "{\"é\": 1, \"x\": [1]}";
        let err = check_depth(input.as_bytes(), 1).unwrap_err();
        assert_eq!((err.line, err.column), (1, 16));
        // serde_json points at the byte after the offending one, in bytes.
        let serde_err =
            serde_json::from_str::<serde_json::Value>("{\"é\": 1, \"x\": [1}").unwrap_err();
        assert_eq!((serde_err.line(), serde_err.column()), (1, 18));
    }

    #[test]
    fn brackets_inside_strings_are_ignored() {
        let input = br#"{"a": "[[[{{{", "b": "]]]}}}", "c": ["{"]}"#;
        assert_eq!(check_depth(input, 2), Ok(()));
        assert!(check_depth(input, 1).is_err());
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        // The string is `"{` (escaped quote then a brace): no nesting.
        assert_eq!(check_depth(br#"["\"{"]"#, 1), Ok(()));
        // An escaped backslash ends the escape, so the quote after it closes
        // the string and the following `[` counts.
        let input = br#"["\\", ["x"]]"#;
        assert_eq!(check_depth(input, 2), Ok(()));
        assert_eq!(
            check_depth(input, 1),
            Err(TooDeep {
                max: 1,
                line: 1,
                column: 8
            })
        );
        // Unicode escapes contain no quotes or brackets, so they pass
        // through untouched.
        assert_eq!(check_depth(br#"["\u005b\u007b"]"#, 1), Ok(()));
    }

    #[test]
    fn unbalanced_input_is_left_to_serde_json() {
        assert_eq!(check_depth(b"]]]][", 1), Ok(()));
        assert_eq!(check_depth(b"[[[", 3), Ok(()));
        assert!(check_depth(b"]][[", 1).is_err());
    }

    #[test]
    fn deep_input_is_scanned_without_recursion() {
        let deep = nested(100_000);
        assert_eq!(check_depth(deep.as_bytes(), 100_000), Ok(()));
        let err = check_depth(deep.as_bytes(), 50_000).unwrap_err();
        assert_eq!(err.column, 50_001);
    }
}
