//! The payload rules (docs/configuration.md, "`[[event_types]]`"; docs/plugins.md §5),
//! as the router applies them to every emitted event, so that a plugin's
//! tests check its payloads against its declarations with the real rules
//! instead of a copy of their own.
//!
//! - an optional field may be absent or `null`; a required one may not
//!   (`missing`);
//! - `integer` accepts numbers without a fractional part (`3`, `3.0`) and
//!   `number` accepts integers;
//! - an enum compares numbers by value (`2.0` is in `[1, 2]`);
//! - fields outside the schema are refused (`unknown`) unless the type sets
//!   `additional_fields`.
//!
//! Every problem is reported at once, sorted by field name, in the same
//! shape as the router's `400` reply to a bad publish.
//!
//! ```
//! use switchyard_plugin_api::serde_json::json;
//! use switchyard_plugin_api::{EventTypeDecl, Field};
//!
//! let decl = EventTypeDecl::new("demo.done", "demo", "Done")
//!     .field("n", Field::integer().required())
//!     .field("level", Field::string().one_of(&["low", "high"]));
//! assert!(decl.check_payload(&json!({"n": 3.0, "level": null})).is_empty());
//! let problems = decl.check_payload(&json!({"level": "mid", "x": 1}));
//! let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
//! assert_eq!(
//!     shown,
//!     [
//!         r#"`level`: not_in_enum (expected ["low","high"])"#,
//!         r#"`n`: missing (expected "integer")"#,
//!         "`x`: unknown",
//!     ]
//! );
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{EventTypeDecl, Field, FieldType};

/// One thing wrong with one payload field.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldProblem {
    /// The field's name (`payload` when the payload itself is not an object).
    pub field: String,
    /// What is wrong.
    pub problem: Problem,
    /// What would have been accepted: the JSON type name (e.g. `"integer"`)
    /// for [`Problem::Missing`] and [`Problem::WrongType`], the list of
    /// allowed values for [`Problem::NotInEnum`], `null` for
    /// [`Problem::Unknown`].
    pub expected: Value,
}

/// The kind of a [`FieldProblem`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// A required field is absent or `null`.
    Missing,
    /// The value is not of the declared JSON type.
    WrongType,
    /// The value is not one of the declared enum values.
    NotInEnum,
    /// The field is not declared and the schema refuses additional fields.
    Unknown,
}

impl Problem {
    /// The problem's name in the router's replies (`not_in_enum`, …).
    pub fn word(self) -> &'static str {
        match self {
            Problem::Missing => "missing",
            Problem::WrongType => "wrong_type",
            Problem::NotInEnum => "not_in_enum",
            Problem::Unknown => "unknown",
        }
    }
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.field, self.problem.word())?;
        if !self.expected.is_null() {
            write!(f, " (expected {})", self.expected)?;
        }
        Ok(())
    }
}

impl EventTypeDecl {
    /// Every problem the router would find with `payload` for this type
    /// (see [`validate`]); empty when the router would accept it.
    pub fn check_payload(&self, payload: &Value) -> Vec<FieldProblem> {
        let none = BTreeMap::new();
        let fields = self.payload.as_ref().unwrap_or(&none);
        validate(fields, self.additional_fields, payload)
    }
}

/// Every problem with `payload` against the declared `fields`, sorted by
/// field name; empty when the payload is valid. `additional_fields` says
/// whether undeclared fields are accepted.
pub fn validate(
    fields: &BTreeMap<String, Field>,
    additional_fields: bool,
    payload: &Value,
) -> Vec<FieldProblem> {
    let Some(object) = payload.as_object() else {
        return vec![FieldProblem {
            field: "payload".to_owned(),
            problem: Problem::WrongType,
            expected: Value::from("object"),
        }];
    };
    let mut problems: Vec<FieldProblem> = fields
        .iter()
        .filter_map(|(name, field)| {
            check_field(field, object.get(name)).map(|(problem, expected)| FieldProblem {
                field: name.clone(),
                problem,
                expected,
            })
        })
        .collect();
    if !additional_fields {
        problems.extend(unknown_fields(fields, object));
    }
    // Each field yields at most one problem, so sorting by name alone is a
    // total, deterministic order.
    problems.sort_by(|a, b| a.field.cmp(&b.field));
    problems
}

/// The fields of `object` that `fields` does not declare.
fn unknown_fields<'a>(
    fields: &'a BTreeMap<String, Field>,
    object: &'a Map<String, Value>,
) -> impl Iterator<Item = FieldProblem> + 'a {
    object
        .keys()
        .filter(|name| !fields.contains_key(*name))
        .map(|name| FieldProblem {
            field: name.clone(),
            problem: Problem::Unknown,
            expected: Value::Null,
        })
}

/// Checks one declared field against its value (`None` when absent).
fn check_field(field: &Field, value: Option<&Value>) -> Option<(Problem, Value)> {
    let expected_type = || Value::from(type_name(field.field_type));
    let value = match value {
        None | Some(Value::Null) if field.required => {
            return Some((Problem::Missing, expected_type()))
        }
        None | Some(Value::Null) => return None,
        Some(value) => value,
    };
    if !has_type(value, field.field_type) {
        return Some((Problem::WrongType, expected_type()));
    }
    match &field.allowed {
        Some(allowed) if !allowed.iter().any(|candidate| same_value(candidate, value)) => {
            Some((Problem::NotInEnum, Value::Array(allowed.clone())))
        }
        _ => None,
    }
}

/// The JSON Schema name of a field type.
pub fn type_name(field_type: FieldType) -> &'static str {
    match field_type {
        FieldType::String => "string",
        FieldType::Integer => "integer",
        FieldType::Number => "number",
        FieldType::Boolean => "boolean",
        FieldType::Object => "object",
        FieldType::Array => "array",
    }
}

/// Whether `value` (not `null`) is of `field_type`.
fn has_type(value: &Value, field_type: FieldType) -> bool {
    match field_type {
        FieldType::String => value.is_string(),
        FieldType::Integer => is_integer(value),
        FieldType::Number => value.is_number(),
        FieldType::Boolean => value.is_boolean(),
        FieldType::Object => value.is_object(),
        FieldType::Array => value.is_array(),
    }
}

/// Whether `value` is a number without a fractional part; `3.0` counts,
/// because many JSON producers cannot tell integers and floats apart.
fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => true,
        Value::Number(n) => n
            .as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0),
        _ => false,
    }
}

/// JSON equality where numbers compare by value, so an integer enum `[1, 2]`
/// accepts `2.0` just as the `integer` type does.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (as_exact_integer(x), as_exact_integer(y)) {
                // Both integral in representation: compare exactly, since
                // large u64/i64 values lose precision as f64.
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(key, x)| ys.get(key).is_some_and(|y| same_value(x, y)))
        }
        _ => a == b,
    }
}

/// The number as an `i128` when it is stored as an integer.
fn as_exact_integer(n: &serde_json::Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Problems with a payload declaration itself, one human-readable message
/// each (naming the field); empty when the declaration is sound.
///
/// Catches declarations that could never validate as intended: an empty
/// field name, enum values not of the field's type (including `null`, which
/// an optional field accepts anyway), an empty enum and repeated enum
/// values.
pub fn check_declaration(fields: &BTreeMap<String, Field>) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, field) in fields {
        if name.is_empty() {
            problems.push("a payload field has an empty name".to_owned());
        }
        let Some(allowed) = &field.allowed else {
            continue;
        };
        let type_name = type_name(field.field_type);
        if allowed.is_empty() {
            problems.push(format!(
                "field `{name}`: `enum` is empty, so no value would be accepted; \
                 list the allowed values or remove `enum`"
            ));
        }
        for (index, value) in allowed.iter().enumerate() {
            if value.is_null() {
                problems.push(format!(
                    "field `{name}`: `enum` lists null; leave it out and make the \
                     field optional (`required = false`) to accept null"
                ));
            } else if !has_type(value, field.field_type) {
                problems.push(format!(
                    "field `{name}`: `enum` value {value} is not of the field's type \
                     `{type_name}`"
                ));
            } else if allowed[..index]
                .iter()
                .any(|earlier| same_value(earlier, value))
            {
                problems.push(format!(
                    "field `{name}`: `enum` lists {value} more than once"
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl() -> EventTypeDecl {
        EventTypeDecl::new("demo.done", "demo", "Done")
            .field("n", Field::integer().required())
            .field("ratio", Field::number())
            .field("tags", Field::array())
            .field("level", Field::integer().describe("1 or 2"))
    }

    fn problems(decl: &EventTypeDecl, payload: Value) -> Vec<(String, Problem)> {
        decl.check_payload(&payload)
            .into_iter()
            .map(|p| (p.field, p.problem))
            .collect()
    }

    #[test]
    fn integers_may_be_written_as_floats_and_numbers_may_be_integers() {
        assert!(problems(&decl(), json!({"n": 3.0, "ratio": 2})).is_empty());
        assert_eq!(
            problems(&decl(), json!({"n": 3.5})),
            [("n".into(), Problem::WrongType)]
        );
    }

    #[test]
    fn null_is_absent_and_a_required_field_may_not_be_either() {
        assert!(problems(&decl(), json!({"n": 1, "ratio": null})).is_empty());
        assert_eq!(
            problems(&decl(), json!({"n": null})),
            [("n".into(), Problem::Missing)]
        );
    }

    #[test]
    fn enums_compare_numbers_by_value() {
        let mut decl = decl();
        let fields = decl.payload.as_mut().unwrap();
        fields.get_mut("level").unwrap().allowed = Some(vec![json!(1), json!(2)]);
        assert!(problems(&decl, json!({"n": 1, "level": 2.0})).is_empty());
        let found = decl.check_payload(&json!({"n": 1, "level": 3}));
        assert_eq!(found[0].problem, Problem::NotInEnum);
        assert_eq!(found[0].expected, json!([1, 2]));
    }

    #[test]
    fn unknown_fields_unless_the_type_allows_them_and_all_sorted() {
        assert_eq!(
            problems(&decl(), json!({"z": 1, "a": 2, "tags": {}})),
            [
                ("a".into(), Problem::Unknown),
                ("n".into(), Problem::Missing),
                ("tags".into(), Problem::WrongType),
                ("z".into(), Problem::Unknown),
            ]
        );
        let mut open = decl();
        open.additional_fields = true;
        assert!(problems(&open, json!({"n": 1, "z": 1})).is_empty());
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_one_problem() {
        let found = decl().check_payload(&json!([1]));
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].to_string(),
            r#"`payload`: wrong_type (expected "object")"#
        );
    }

    #[test]
    fn problems_serialize_as_the_router_reports_them() {
        let found = decl().check_payload(&json!({}));
        assert_eq!(
            serde_json::to_value(&found).unwrap(),
            json!([{"field": "n", "problem": "missing", "expected": "integer"}])
        );
    }

    #[test]
    fn sound_declarations_have_no_problems() {
        let mut level = Field::integer();
        level.allowed = Some(vec![json!(1), json!(2.0)]);
        let fields = BTreeMap::from([
            ("id".to_owned(), Field::string().required()),
            (
                "severity".to_owned(),
                Field::string().one_of(&["low", "high"]),
            ),
            ("level".to_owned(), level),
        ]);
        assert_eq!(check_declaration(&fields), Vec::<String>::new());
    }

    #[test]
    fn bad_declarations_are_explained() {
        let mut level = Field::integer();
        level.allowed = Some(vec![
            json!(1),
            json!("two"),
            json!(1.5),
            json!(1.0),
            Value::Null,
        ]);
        let mut empty = Field::string();
        empty.allowed = Some(vec![]);
        let fields = BTreeMap::from([
            (String::new(), Field::string()),
            ("level".to_owned(), level),
            ("nothing".to_owned(), empty),
        ]);
        let problems = check_declaration(&fields);
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(problems[0].contains("empty name"), "{}", problems[0]);
        assert!(problems[1].contains(r#"value "two" is not of the field's type `integer`"#));
        assert!(problems[2].contains("value 1.5 is not"), "{}", problems[2]);
        assert!(
            problems[3].contains("lists 1.0 more than once"),
            "{}",
            problems[3]
        );
        assert!(problems[4].contains("lists null"), "{}", problems[4]);
        assert!(
            problems[5].contains("field `nothing`: `enum` is empty"),
            "{}",
            problems[5]
        );
    }
}
