//! minijinja rendering: templates, templated task arguments and `when`
//! expressions, all over one JSON context (see [`super::context`]).
//!
//! Undefined values are errors when printed (SemiStrict): a typo in a
//! template fails the task instead of writing an empty word into a config
//! file, while `{% if x %}` and `when: x` still treat undefined as false.
//! Templates may call `fail("message")` to refuse a case they don't handle;
//! the `mount_escape` filter writes a path the fstab/exports way (`\040`).

use std::collections::BTreeMap;

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};
use serde_json::Value as Json;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct RenderError(pub String);

fn render_error(what: &str, e: &Error) -> RenderError {
    let mut msg = format!("{what}: {}", e.kind());
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    if let (Some(name), Some(line)) = (e.name(), e.line()) {
        msg.push_str(&format!(" ({name} line {line})"));
    }
    RenderError(msg)
}

pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    /// An environment holding the given templates (name → (origin, text)).
    pub fn new(templates: &BTreeMap<String, (String, String)>) -> Result<Renderer, RenderError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_keep_trailing_newline(true);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("fail", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_filter("mount_escape", |s: String| -> String { super::state::escape_mount_field(&s) });
        for (name, (origin, text)) in templates {
            env.add_template_owned(name.clone(), text.clone()).map_err(|e| render_error(origin, &e))?;
        }
        Ok(Renderer { env })
    }

    /// Render the template file `name`.
    pub fn template(&self, name: &str, ctx: &Json) -> Result<String, RenderError> {
        let t = self.env.get_template(name).map_err(|_| RenderError(format!("no template named {name}")))?;
        t.render(ctx).map_err(|e| render_error(&format!("template {name}"), &e))
    }

    /// Render one string (left as is when it holds no template syntax).
    pub fn string(&self, s: &str, ctx: &Json) -> Result<String, RenderError> {
        if !s.contains("{{") && !s.contains("{%") {
            return Ok(s.to_string());
        }
        self.env.render_str(s, ctx).map_err(|e| render_error(&format!("`{s}`"), &e))
    }

    /// Evaluate an expression to a JSON value.
    pub fn eval(&self, expr: &str, ctx: &Json) -> Result<Json, RenderError> {
        let e = self.env.compile_expression(expr).map_err(|e| render_error(&format!("`{expr}`"), &e))?;
        let v: Value = e.eval(ctx).map_err(|e| render_error(&format!("`{expr}`"), &e))?;
        if v.is_undefined() {
            return Err(RenderError(format!("`{expr}` is undefined")));
        }
        serde_json::to_value(&v).map_err(|e| RenderError(format!("`{expr}`: {e}")))
    }

    /// A `when` condition. Undefined is false.
    pub fn truth(&self, expr: &str, ctx: &Json) -> Result<bool, RenderError> {
        let e = self.env.compile_expression(expr).map_err(|e| render_error(&format!("when `{expr}`"), &e))?;
        let v = e.eval(ctx).map_err(|e| render_error(&format!("when `{expr}`"), &e))?;
        Ok(v.is_true())
    }

    /// Render every string inside `v`. A string that is exactly one
    /// `{{ expression }}` keeps the expression's type (a list stays a list).
    pub fn value(&self, v: &Json, ctx: &Json) -> Result<Json, RenderError> {
        Ok(match v {
            Json::String(s) => match single_expression(s) {
                Some(expr) => self.eval(expr, ctx)?,
                None => Json::String(self.string(s, ctx)?),
            },
            Json::Array(items) => {
                Json::Array(items.iter().map(|i| self.value(i, ctx)).collect::<Result<_, _>>()?)
            }
            Json::Object(map) => {
                Json::Object(map.iter().map(|(k, v)| Ok((k.clone(), self.value(v, ctx)?))).collect::<Result<
                    _,
                    RenderError,
                >>(
                )?)
            }
            other => other.clone(),
        })
    }
}

/// `{{ expr }}` with nothing around it → `expr`.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r() -> Renderer {
        let mut t = BTreeMap::new();
        t.insert("t.j2".to_string(), ("t".to_string(), "{% if x %}x={{ x }}\n{% endif %}end\n".to_string()));
        Renderer::new(&t).unwrap()
    }

    #[test]
    fn renders_templates_strings_values_and_conditions() {
        let r = r();
        let ctx = json!({"x": 3, "list": ["a", "b"], "none": null});
        assert_eq!(r.template("t.j2", &ctx).unwrap(), "x=3\nend\n");
        assert_eq!(r.template("t.j2", &json!({})).unwrap(), "end\n");
        assert_eq!(r.string("v{{ x }}", &ctx).unwrap(), "v3");
        assert_eq!(
            r.value(&json!({"a": "{{ list }}", "b": ["{{ x }}!"], "c": true}), &ctx).unwrap(),
            json!({"a": ["a", "b"], "b": ["3!"], "c": true})
        );
        assert!(r.truth("x > 2", &ctx).unwrap());
        assert!(!r.truth("none", &ctx).unwrap());
        assert!(!r.truth("missing", &ctx).unwrap());
        // A typo in a condition is an error, not a silent false.
        assert!(r.truth("facts.os_idd == 'debian'", &json!({"facts": {}})).is_err());
    }

    #[test]
    fn undefined_output_and_fail_are_errors() {
        let r = r();
        assert!(r.string("{{ nope }}/x", &json!({})).is_err());
        assert!(r.value(&json!("{{ facts.os_id }}"), &json!({})).is_err());
        let e = r.string("{{ fail('no such OS') }}", &json!({})).unwrap_err();
        assert!(e.0.contains("no such OS"), "{e}");
        assert!(r.template("missing.j2", &json!({})).is_err());
    }
}
