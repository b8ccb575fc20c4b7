//! The API's OpenAPI document, read the way a client (or a fuzzer) reads
//! it: which operation a request hits, which statuses it documents, and
//! whether a response body fits the documented schema. The schema check
//! covers the JSON Schema keywords the document uses; an unknown keyword
//! fails loudly rather than passing silently.
#![allow(dead_code)]

use serde_json::Value;

pub struct Doc(pub Value);

impl Doc {
    pub fn load() -> Self {
        Doc(serde_json::from_str(alerting::http::OPENAPI).expect("openapi.json is JSON"))
    }

    /// The path template a concrete path matches (`/v1/incidents/7` →
    /// `/v1/incidents/{id}`), ignoring the query.
    pub fn template(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or(path);
        let parts: Vec<&str> = path.split('/').collect();
        self.0["paths"]
            .as_object()?
            .keys()
            .find(|t| {
                let want: Vec<&str> = t.split('/').collect();
                want.len() == parts.len() && want.iter().zip(&parts).all(|(w, p)| w.starts_with('{') || w == p)
            })
            .cloned()
    }

    pub fn operation(&self, method: &str, path: &str) -> Option<&Value> {
        let template = self.template(path)?;
        let op = &self.0["paths"][template.as_str()][method.to_lowercase()];
        (!op.is_null()).then_some(op)
    }

    /// Whether `status` is documented for the operation, and the body fits
    /// its schema (when the response has JSON content).
    pub fn check(&self, method: &str, path: &str, status: u16, content_type: &str, body: &Value) -> Result<(), String> {
        let op = self.operation(method, path).ok_or_else(|| format!("{method} {path} is not in the document"))?;
        let mut response = &op["responses"][status.to_string()];
        if response.is_null() {
            return Err(format!("{method} {path} answered {status}, which its operation does not document"));
        }
        if let Some(r) = response["$ref"].as_str() {
            response = self.pointer(r);
        }
        let Some(content) = response["content"].as_object() else {
            return if body.is_null() {
                Ok(())
            } else {
                Err(format!("{method} {path} {status}: a body where none is documented: {body}"))
            };
        };
        let media = content_type.split(';').next().unwrap_or("").trim();
        let schema = &content
            .get(media)
            .ok_or_else(|| format!("{method} {path} {status}: content type {media:?} not documented"))?["schema"];
        if media == "application/json" {
            self.validate(schema, body, "$").map_err(|e| format!("{method} {path} {status}: {e}\nbody: {body}"))?;
        }
        Ok(())
    }

    fn pointer(&self, r: &str) -> &Value {
        self.0.pointer(r.trim_start_matches('#')).unwrap_or(&Value::Null)
    }

    pub fn validate(&self, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
        let Some(schema) = schema.as_object() else { return Err(format!("{at}: schema is not an object")) };
        for (keyword, rule) in schema {
            match keyword.as_str() {
                "$ref" => self.validate(self.pointer(rule.as_str().unwrap_or("")), v, at)?,
                "type" => {
                    let types: Vec<&str> = match rule {
                        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                        t => vec![t.as_str().unwrap_or("")],
                    };
                    if !types.iter().any(|t| is_type(t, v)) {
                        return Err(format!("{at}: {v} is not {types:?}"));
                    }
                }
                "enum" => {
                    if !rule.as_array().is_some_and(|a| a.contains(v)) {
                        return Err(format!("{at}: {v} not in {rule}"));
                    }
                }
                "const" => {
                    if rule != v {
                        return Err(format!("{at}: {v} is not {rule}"));
                    }
                }
                "properties" => {
                    if let Some(obj) = v.as_object() {
                        for (name, sub) in rule.as_object().into_iter().flatten() {
                            if let Some(value) = obj.get(name) {
                                self.validate(sub, value, &format!("{at}.{name}"))?;
                            }
                        }
                    }
                }
                "required" => {
                    if let Some(obj) = v.as_object() {
                        for name in rule.as_array().into_iter().flatten().filter_map(Value::as_str) {
                            if !obj.contains_key(name) {
                                return Err(format!("{at}: missing {name}"));
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Some(obj) = v.as_object() {
                        let known = schema.get("properties").and_then(Value::as_object);
                        for (name, value) in obj.iter().filter(|(n, _)| !known.is_some_and(|k| k.contains_key(*n))) {
                            match rule {
                                Value::Bool(false) => return Err(format!("{at}: unexpected property {name}")),
                                Value::Bool(true) => {}
                                sub => self.validate(sub, value, &format!("{at}.{name}"))?,
                            }
                        }
                    }
                }
                "items" => {
                    for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                        self.validate(rule, item, &format!("{at}[{i}]"))?;
                    }
                }
                "minimum" | "maximum" => {
                    if let (Some(n), Some(bound)) = (v.as_f64(), rule.as_f64()) {
                        let ok = if keyword == "minimum" { n >= bound } else { n <= bound };
                        if !ok {
                            return Err(format!("{at}: {n} breaks {keyword} {bound}"));
                        }
                    }
                }
                "minLength" | "maxLength" => {
                    if let (Some(s), Some(bound)) = (v.as_str(), rule.as_u64()) {
                        let n = s.chars().count() as u64;
                        if (keyword == "minLength" && n < bound) || (keyword == "maxLength" && n > bound) {
                            return Err(format!("{at}: length {n} breaks {keyword} {bound}"));
                        }
                    }
                }
                "pattern" => {
                    if let Some(s) = v.as_str() {
                        let re = regex::Regex::new(rule.as_str().unwrap_or(""))
                            .map_err(|e| format!("{at}: bad pattern: {e}"))?;
                        if !re.is_match(s) {
                            return Err(format!("{at}: {s:?} does not match {rule}"));
                        }
                    }
                }
                "oneOf" | "anyOf" | "allOf" => {
                    let passed =
                        rule.as_array().into_iter().flatten().filter(|sub| self.validate(sub, v, at).is_ok()).count();
                    let n = rule.as_array().map_or(0, Vec::len);
                    let ok = match keyword.as_str() {
                        "oneOf" => passed == 1,
                        "anyOf" => passed >= 1,
                        _ => passed == n,
                    };
                    if !ok {
                        return Err(format!("{at}: {v} fails {keyword} ({passed} of {n} match)"));
                    }
                }
                "description" | "format" | "default" | "example" | "minProperties" | "maxProperties"
                | "propertyNames" => {}
                other => return Err(format!("{at}: the checker does not know `{other}`")),
            }
        }
        Ok(())
    }
}

fn is_type(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}
