//! Comparing what a page shows with what the services printed: ids bound both ways, log
//! lines field by field, `traceparent` by shape.

use std::collections::HashMap;

use serde_json::Value;

use super::page::At;

/// Ids shown on a page → real ids, consistent both ways.
#[derive(Debug, Default)]
pub(super) struct Ids(HashMap<String, String>);

impl Ids {
    /// Records that the page's `shown` is the real `real`; panics on a contradiction.
    pub(super) fn bind(&mut self, shown: &str, real: &str, at: &At) {
        if let Some(before) = self.0.get(shown) {
            assert_eq!(before, real, "{at}: {shown} stands for two real ids");
        } else {
            assert!(
                !self.0.values().any(|v| v == real),
                "{at}: the real id {real} is shown as two ids"
            );
            self.0.insert(shown.to_owned(), real.to_owned());
        }
    }

    /// `text` with every id shown replaced by its real one.
    pub(super) fn apply(&self, text: &str) -> String {
        self.0.iter().fold(text.to_owned(), |text, (shown, real)| {
            text.replace(shown, real)
        })
    }
}

pub(super) fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Whether `text` is an id a page may show as any other of its kind.
pub(super) fn generated_id(text: &str) -> bool {
    system_tests::is_uuid_v4(text) || is_hex(text, 32) || is_hex(text, 16)
}

/// The keys of a JSON object line, in the order printed.
pub(super) fn keys_in_order(line: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(
            mut self,
            mut map: M,
        ) -> Result<Self::Value, M::Error> {
            while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                self.0.push(key);
            }
            Ok(self.0)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    serde::Deserializer::deserialize_map(&mut de, Keys(Vec::new())).expect("a JSON object")
}

/// One log line shown on a page against the real one: the same keys in the same order, the same
/// values except times (their type) and ids (their shape, bound in `ids`).
pub(super) fn compare_log_line(shown: &str, real: &str, ids: &mut Ids, at: &At) {
    assert_eq!(
        keys_in_order(shown),
        keys_in_order(real),
        "{at}: fields of\n  page: {shown}\n  real:   {real}"
    );
    let shown_value: Value = serde_json::from_str(shown).expect("the log line shown is JSON");
    let real_value: Value = serde_json::from_str(real).expect("log line is JSON");
    for (key, shown_field) in shown_value.as_object().expect("object") {
        let real_field = &real_value[key];
        match key.as_str() {
            "ts" => assert!(
                real_field
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
                "{at}: ts {real_field}"
            ),
            "latency_ms" => assert!(real_field.is_number(), "{at}: latency_ms"),
            _ if shown_field.as_str().is_some_and(generated_id) => {
                let real_id = real_field.as_str().unwrap_or_default();
                assert!(
                    generated_id(real_id),
                    "{at}: {key} is an id, real {real_field}"
                );
                ids.bind(shown_field.as_str().unwrap_or_default(), real_id, at);
            }
            _ => {
                let shown_field =
                    serde_json::from_str::<Value>(&ids.apply(&shown_field.to_string()))
                        .expect("JSON");
                assert_eq!(
                    &shown_field, real_field,
                    "{at}: {key} in\n  page: {shown}\n  real:   {real}"
                );
            }
        }
    }
}

/// A `traceresponse` (or `traceparent`) value: version and flags as shown, ids bound.
pub(super) fn compare_traceparent(shown: &str, real: &str, ids: &mut Ids, at: &At) {
    let shown_parts: Vec<&str> = shown.split('-').collect();
    let real_parts: Vec<&str> = real.split('-').collect();
    assert!(
        shown_parts.len() == 4 && real_parts.len() == 4,
        "{at}: {shown} / {real}"
    );
    assert_eq!(shown_parts[0], real_parts[0], "{at}: version");
    assert_eq!(shown_parts[3], real_parts[3], "{at}: trace flags of {real}");
    ids.bind(shown_parts[1], real_parts[1], at);
    ids.bind(shown_parts[2], real_parts[2], at);
}
