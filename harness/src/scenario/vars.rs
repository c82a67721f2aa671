//! `${NAME}` variables in scenario steps; `${NAME%SUFFIX}` drops a trailing SUFFIX.

use std::collections::BTreeMap;

use serde_yaml::Value;

/// Replaces every `${NAME}` in the strings of `value`. Unknown names are left as written;
/// validation rejects them before a run starts.
pub fn expand(value: &Value, vars: &BTreeMap<String, String>) -> Value {
    match value {
        Value::String(text) => Value::String(expand_str(text, vars)),
        Value::Sequence(items) => Value::Sequence(items.iter().map(|v| expand(v, vars)).collect()),
        Value::Mapping(map) => Value::Mapping(
            map.iter()
                .map(|(k, v)| (expand(k, vars), expand(v, vars)))
                .collect(),
        ),
        Value::Tagged(tagged) => Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
            tag: tagged.tag.clone(),
            value: expand(&tagged.value, vars),
        })),
        other => other.clone(),
    }
}

fn expand_str(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let (name, suffix) = split_reference(&after[..end]);
                match vars.get(name) {
                    Some(value) => out.push_str(value.strip_suffix(suffix).unwrap_or(value)),
                    None => out.push_str(&rest[start..start + 3 + end]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Splits `NAME%SUFFIX` (the value of NAME without a trailing SUFFIX, as in the shell) into
/// the name and the suffix; a plain `NAME` has an empty suffix.
fn split_reference(reference: &str) -> (&str, &str) {
    reference.split_once('%').unwrap_or((reference, ""))
}

/// Names of the variables `value` refers to, in order of appearance.
pub fn referenced_variables(value: &Value) -> Vec<String> {
    let mut names = Vec::new();
    collect(value, &mut names);
    names
}

fn collect(value: &Value, names: &mut Vec<String>) {
    match value {
        Value::String(text) => {
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${") {
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else { break };
                names.push(split_reference(&after[..end]).0.to_owned());
                rest = &after[end + 1..];
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| collect(v, names)),
        Value::Mapping(map) => map.iter().for_each(|(k, v)| {
            collect(k, names);
            collect(v, names);
        }),
        Value::Tagged(tagged) => collect(&tagged.value, names),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_known_and_keeps_unknown() {
        let vars = BTreeMap::from([("A".to_owned(), "x".to_owned())]);
        assert_eq!(expand_str("${A}-${B}-${A}", &vars), "x-${B}-x");
        assert_eq!(expand_str("no vars", &vars), "no vars");
        assert_eq!(expand_str("open ${A", &vars), "open ${A");
    }

    #[test]
    fn suffix_is_stripped_when_present() {
        let vars = BTreeMap::from([("URL".to_owned(), "https://i/t/".to_owned())]);
        assert_eq!(expand_str("${URL%/}", &vars), "https://i/t");
        assert_eq!(expand_str("${URL%x}", &vars), "https://i/t/");
        let value = Value::String("${URL%/}".into());
        assert_eq!(referenced_variables(&value), vec!["URL"]);
    }

    #[test]
    fn finds_references_in_nested_values() {
        let value: Value = serde_yaml::from_str("{a: [\"${X}\", {b: \"${Y}/${X}\"}]}").unwrap();
        assert_eq!(referenced_variables(&value), vec!["X", "Y", "X"]);
    }
}
