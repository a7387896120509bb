//! Payload schemas: checking an event's payload against its type's declared
//! fields, and exporting the declaration as JSON Schema.
//!
//! Validation reports every bad field at once, in field-name order, so a
//! publisher can fix a payload in one round trip and tests can compare
//! problem lists exactly.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use switchyard_plugin_api::payload::{self, type_name};
pub use switchyard_plugin_api::payload::{FieldProblem, Problem};
use switchyard_plugin_api::Field;

/// The JSON Schema dialect [`PayloadSchema::to_json_schema`] produces.
const JSON_SCHEMA_DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// A payload schema ready to validate payloads: the declared fields of one
/// event type and whether fields outside them are accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct PayloadSchema {
    fields: BTreeMap<String, Field>,
    additional_fields: bool,
}

impl PayloadSchema {
    /// A schema over `fields`; `additional_fields` says whether undeclared
    /// fields are accepted.
    pub fn new(fields: BTreeMap<String, Field>, additional_fields: bool) -> PayloadSchema {
        PayloadSchema {
            fields,
            additional_fields,
        }
    }

    /// The declared fields by name.
    pub fn fields(&self) -> &BTreeMap<String, Field> {
        &self.fields
    }

    /// Whether fields outside [`fields`](Self::fields) are accepted.
    pub fn additional_fields(&self) -> bool {
        self.additional_fields
    }

    /// Every problem with `payload`, sorted by field name; empty when the
    /// payload is valid. The rules are the plugin SDK's, so that plugin
    /// tests check payloads exactly as the router does.
    pub fn validate(&self, payload: &Value) -> Vec<FieldProblem> {
        payload::validate(&self.fields, self.additional_fields, payload)
    }

    /// The schema as a JSON Schema (draft 2020-12) document, for the
    /// capabilities API and for clients that generate code from it.
    ///
    /// Optional fields accept `null` as well as their type (mirroring
    /// [`validate`](Self::validate)), so their `type` is `[type, "null"]`
    /// and, when they have an enum, `null` is appended to it.
    pub fn to_json_schema(&self) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (name, field) in &self.fields {
            let mut property = Map::new();
            let type_name = type_name(field.field_type);
            if field.required {
                required.push(Value::from(name.as_str()));
                property.insert("type".into(), Value::from(type_name));
            } else {
                property.insert("type".into(), json!([type_name, "null"]));
            }
            if let Some(allowed) = &field.allowed {
                let mut values = allowed.clone();
                if !field.required && !values.contains(&Value::Null) {
                    values.push(Value::Null);
                }
                property.insert("enum".into(), Value::Array(values));
            }
            if let Some(description) = &field.description {
                property.insert("description".into(), Value::from(description.as_str()));
            }
            properties.insert(name.clone(), Value::Object(property));
        }
        json!({
            "$schema": JSON_SCHEMA_DIALECT,
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": self.additional_fields,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &[(&str, Field)], additional_fields: bool) -> PayloadSchema {
        PayloadSchema::new(
            fields
                .iter()
                .map(|(name, field)| (name.to_string(), field.clone()))
                .collect(),
            additional_fields,
        )
    }

    fn problem(field: &str, problem: Problem, expected: Value) -> FieldProblem {
        FieldProblem {
            field: field.to_owned(),
            problem,
            expected,
        }
    }

    #[test]
    fn accessors_return_what_was_given() {
        let s = schema(&[("id", Field::string().required())], true);
        assert!(s.additional_fields());
        assert_eq!(s.fields().len(), 1);
        assert_eq!(s.fields()["id"], Field::string().required());
    }

    #[test]
    fn a_valid_payload_has_no_problems() {
        let s = schema(
            &[
                ("id", Field::string().required()),
                ("count", Field::integer()),
                ("score", Field::number()),
                ("ok", Field::boolean()),
                ("meta", Field::object()),
                ("tags", Field::array()),
            ],
            false,
        );
        let payload = json!({
            "id": "a1", "count": 3, "score": 0.5, "ok": true,
            "meta": {"k": 1}, "tags": ["x"],
        });
        assert_eq!(s.validate(&payload), vec![]);
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let s = schema(&[("note", Field::string())], false);
        assert_eq!(s.validate(&json!({})), vec![]);
        assert_eq!(s.validate(&json!({"note": null})), vec![]);
    }

    #[test]
    fn required_fields_may_not_be_absent_or_null() {
        let s = schema(&[("id", Field::integer().required())], false);
        let missing = vec![problem("id", Problem::Missing, json!("integer"))];
        assert_eq!(s.validate(&json!({})), missing);
        assert_eq!(s.validate(&json!({"id": null})), missing);
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        let s = schema(&[("n", Field::integer())], false);
        for good in [
            json!(3),
            json!(-3),
            json!(3.0),
            json!(-0.0),
            json!(u64::MAX),
            json!(1e20),
        ] {
            assert_eq!(s.validate(&json!({ "n": good })), vec![], "{good}");
        }
        for bad in [json!(3.5), json!("3"), json!(true), json!([3])] {
            assert_eq!(
                s.validate(&json!({ "n": bad })),
                vec![problem("n", Problem::WrongType, json!("integer"))],
                "{bad}"
            );
        }
    }

    #[test]
    fn numbers_accept_integers() {
        let s = schema(&[("x", Field::number())], false);
        for good in [json!(3), json!(-3), json!(3.5)] {
            assert_eq!(s.validate(&json!({ "x": good })), vec![], "{good}");
        }
        assert_eq!(
            s.validate(&json!({"x": "3"})),
            vec![problem("x", Problem::WrongType, json!("number"))]
        );
    }

    #[test]
    fn every_type_refuses_the_others() {
        let cases = [
            (Field::string(), json!(1), "string"),
            (Field::boolean(), json!("true"), "boolean"),
            (Field::object(), json!([]), "object"),
            (Field::array(), json!({}), "array"),
        ];
        for (field, value, expected) in cases {
            let s = schema(&[("f", field)], false);
            assert_eq!(
                s.validate(&json!({ "f": value })),
                vec![problem("f", Problem::WrongType, json!(expected))]
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused_unless_additional_fields() {
        let fields = [("id", Field::string())];
        let payload = json!({"id": "a", "extra": 1});
        assert_eq!(
            schema(&fields, false).validate(&payload),
            vec![problem("extra", Problem::Unknown, Value::Null)]
        );
        assert_eq!(schema(&fields, true).validate(&payload), vec![]);
    }

    #[test]
    fn enums_restrict_values() {
        let s = schema(
            &[("severity", Field::string().one_of(&["low", "high"]))],
            false,
        );
        assert_eq!(s.validate(&json!({"severity": "low"})), vec![]);
        assert_eq!(s.validate(&json!({"severity": null})), vec![]);
        assert_eq!(
            s.validate(&json!({"severity": "medium"})),
            vec![problem(
                "severity",
                Problem::NotInEnum,
                json!(["low", "high"])
            )]
        );
        // A type mismatch is reported as such, not as an enum miss.
        assert_eq!(
            s.validate(&json!({"severity": 1})),
            vec![problem("severity", Problem::WrongType, json!("string"))]
        );
    }

    #[test]
    fn numeric_enums_compare_by_value() {
        let mut level = Field::integer();
        level.allowed = Some(vec![json!(1), json!(2), json!(3)]);
        let mut ratio = Field::number();
        ratio.allowed = Some(vec![json!(0.5), json!(1)]);
        let s = schema(&[("level", level), ("ratio", ratio)], false);
        assert_eq!(s.validate(&json!({"level": 2, "ratio": 0.5})), vec![]);
        assert_eq!(s.validate(&json!({"level": 2.0, "ratio": 1.0})), vec![]);
        assert_eq!(
            s.validate(&json!({"level": 4, "ratio": 0.25})),
            vec![
                problem("level", Problem::NotInEnum, json!([1, 2, 3])),
                problem("ratio", Problem::NotInEnum, json!([0.5, 1])),
            ]
        );
    }

    #[test]
    fn large_integers_compare_exactly() {
        let mut id = Field::integer();
        id.allowed = Some(vec![json!(u64::MAX)]);
        let s = schema(&[("id", id)], false);
        assert_eq!(s.validate(&json!({ "id": u64::MAX })), vec![]);
        assert_eq!(
            s.validate(&json!({ "id": u64::MAX - 1 })).len(),
            1,
            "u64::MAX - 1 rounds to the same f64 but is a different integer"
        );
    }

    #[test]
    fn every_problem_is_reported_in_field_order() {
        let s = schema(
            &[
                ("zeta", Field::string().required()),
                ("alpha", Field::integer()),
                ("mid", Field::string().one_of(&["a"])),
            ],
            false,
        );
        let payload = json!({"alpha": 1.5, "mid": "b", "beta": true, "zz": 0});
        assert_eq!(
            s.validate(&payload),
            vec![
                problem("alpha", Problem::WrongType, json!("integer")),
                problem("beta", Problem::Unknown, Value::Null),
                problem("mid", Problem::NotInEnum, json!(["a"])),
                problem("zeta", Problem::Missing, json!("string")),
                problem("zz", Problem::Unknown, Value::Null),
            ]
        );
    }

    #[test]
    fn a_non_object_payload_is_one_problem() {
        let s = schema(&[("id", Field::string().required())], false);
        for payload in [json!([]), json!("x"), json!(1), Value::Null] {
            assert_eq!(
                s.validate(&payload),
                vec![problem("payload", Problem::WrongType, json!("object"))]
            );
        }
    }

    #[test]
    fn problems_serialize_in_snake_case() {
        let p = problem("n", Problem::NotInEnum, json!([1]));
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"field": "n", "problem": "not_in_enum", "expected": [1]})
        );
        assert_eq!(
            serde_json::to_value(Problem::WrongType).unwrap(),
            json!("wrong_type")
        );
    }

    #[test]
    fn json_schema_has_the_expected_shape() {
        let s = schema(
            &[
                ("id", Field::string().required().describe("Alert id")),
                ("severity", Field::string().one_of(&["low", "high"])),
                ("count", Field::integer()),
            ],
            false,
        );
        assert_eq!(
            s.to_json_schema(),
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {
                    "count": {"type": ["integer", "null"]},
                    "id": {"type": "string", "description": "Alert id"},
                    "severity": {
                        "type": ["string", "null"],
                        "enum": ["low", "high", null],
                    },
                },
                "required": ["id"],
                "additionalProperties": false,
            })
        );
        let open = schema(&[], true).to_json_schema();
        assert_eq!(open["additionalProperties"], json!(true));
        assert_eq!(open["required"], json!([]));
        assert_eq!(open["properties"], json!({}));
    }

    #[test]
    fn required_enums_do_not_gain_null() {
        let s = schema(&[("s", Field::string().required().one_of(&["a"]))], false);
        assert_eq!(s.to_json_schema()["properties"]["s"]["enum"], json!(["a"]));
    }
}
