//! The value at an RFC 6901 JSON pointer in a payload, found in one pass without building the
//! document: members off the path are skipped (still checked for syntax), so reading
//! `/enqueued_at` out of a job costs a scan of its bytes, not a tree of maps and strings for
//! every job of every poll.
//!
//! Behaves like parsing into `serde_json::Value` and calling `pointer`, including for duplicate
//! member names (the last one counts, as `serde_json::Map` keeps it), array indices, `~0`/`~1`
//! escapes and trailing garbage (an error); a property test below holds it to that.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The value at `pointer` in `payload`, `Ok(None)` when the pointer finds nothing.
///
/// # Errors
/// When `payload` is not one JSON document.
pub fn find(payload: &[u8], pointer: &str) -> Result<Option<serde_json::Value>, serde_json::Error> {
    let path: Vec<Cow<'_, str>> = if pointer.is_empty() {
        Vec::new()
    } else {
        pointer
            .strip_prefix('/')
            .unwrap_or(pointer)
            .split('/')
            .map(|s| {
                if s.contains('~') {
                    Cow::Owned(s.replace("~1", "/").replace("~0", "~"))
                } else {
                    Cow::Borrowed(s)
                }
            })
            .collect()
    };
    if !pointer.is_empty() && !pointer.starts_with('/') {
        // `Value::pointer` finds nothing for such a pointer; the payload must still be JSON.
        let mut de = serde_json::Deserializer::from_slice(payload);
        <IgnoredAny as serde::Deserialize>::deserialize(&mut de)?;
        de.end()?;
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_slice(payload);
    let found = Walk { path: &path }.deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// Descends along `path`; at its end, the value there.
struct Walk<'p> {
    path: &'p [Cow<'p, str>],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Option<serde_json::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.path.is_empty() {
            return serde::Deserialize::deserialize(d).map(Some);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Option<serde_json::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (segment, rest) = (&self.path[0], &self.path[1..]);
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(segment))? {
            if matches {
                found = map.next_value_seed(Walk { path: rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (segment, rest) = (&self.path[0], &self.path[1..]);
        // As `Value::pointer`: a decimal index without a leading zero (or "0" itself).
        let index = (segment.len() == 1 || !segment.starts_with('0'))
            .then(|| segment.parse::<usize>().ok())
            .flatten()
            .filter(|_| !segment.starts_with('+'));
        let mut found = None;
        let mut i = 0;
        loop {
            if Some(i) == index {
                match seq.next_element_seed(Walk { path: rest })? {
                    Some(v) => found = v,
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }

    // A scalar has nothing inside it: the pointer goes on past it and finds nothing.
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Whether a member name equals the path segment, without keeping the name.
struct KeyIs<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn reference(payload: &[u8], pointer: &str) -> Result<Option<serde_json::Value>, ()> {
        let v: serde_json::Value = serde_json::from_slice(payload).map_err(|_| ())?;
        Ok(v.pointer(pointer).cloned())
    }

    #[test]
    fn finds_what_value_pointer_finds() {
        let doc = br#"{"a":{"b~c":[10,{"d/e":"x"}]},"n":1,"n":2,"arr":[0,1,2]}"#;
        for pointer in [
            "",
            "/a",
            "/a/b~0c",
            "/a/b~0c/1/d~1e",
            "/n",
            "/arr/2",
            "/arr/02",
            "/arr/x",
            "/missing",
            "/n/deeper",
            "a",
            "/arr/3",
            "/arr/-",
        ] {
            assert_eq!(
                find(doc, pointer).map_err(|_| ()),
                reference(doc, pointer),
                "{pointer}"
            );
        }
        assert!(find(b"{\"a\":1} trailing", "/a").is_err());
        assert!(find(b"{\"a\":1,}", "/a").is_err());
        assert!(find(b"job-17", "/a").is_err());
        assert!(
            find(br#"{"a":[1,}"#, "/b").is_err(),
            "syntax off the path is checked"
        );
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            "[a-z~/]{0,4}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::vec(("[ab~/]{0,2}", inner), 0..4)
                    .prop_map(|kv| { serde_json::Value::Object(kv.into_iter().collect()) }),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_value_pointer(doc in json(), pointer in "(/([ab0-2]|~0|~1){0,2}){0,3}") {
            let text = serde_json::to_vec(&doc).unwrap();
            prop_assert_eq!(find(&text, &pointer).map_err(|_| ()), reference(&text, &pointer));
        }

        #[test]
        fn agrees_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..40), pointer in "(/[a-c]){0,2}") {
            prop_assert_eq!(find(&bytes, &pointer).is_ok(), reference(&bytes, &pointer).is_ok());
        }
    }
}
