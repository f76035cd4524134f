//! A JSON object's top-level fields, read in one pass without a map: keys
//! borrowed from the text where they have no escapes, values as
//! `serde_json::Value`, in the order they came. A Kinetid message has a
//! dozen fields, so a scan finds one faster than hashing its name, and no
//! key is copied.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// The fields of one object, first to last.
#[derive(Debug, Default)]
pub struct Obj<'a>(Vec<(Cow<'a, str>, Value)>);

impl Obj<'_> {
    /// A field's value; of repeated keys the last wins, as in a map.
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v)
    }

    /// Is the field there?
    pub fn contains_key(&self, k: &str) -> bool {
        self.0.iter().any(|(n, _)| n == k)
    }

    /// The object read into a struct, field by field from the values
    /// already parsed (no second pass over the text). A struct refuses a
    /// repeated field where a map keeps the last: then it is read from
    /// [`Obj::to_value`].
    pub fn read<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        let fields = self.0.iter().map(|(k, v)| (k.as_ref(), v));
        let d = de::value::MapDeserializer::<_, serde_json::Error>::new(fields);
        T::deserialize(d)
            .ok()
            .or_else(|| T::deserialize(&self.to_value()).ok())
    }

    /// The object as a `Value` (last of repeated keys wins).
    pub fn to_value(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }
}

/// A JSON text: an object, or some other value.
pub enum Top<'a> {
    /// An object's fields.
    Object(Obj<'a>),
    /// An array, string, number, boolean or null.
    Other,
}

/// An object key: borrowed from the text unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Top<'de>, A::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(12).min(64));
                while let Some((k, x)) = m.next_entry::<Key<'de>, Value>()? {
                    v.push((k.0, x));
                }
                Ok(Top::Object(Obj(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Top<'de>, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Top::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Top<'de>, E> {
                Ok(Top::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Top<'de>, E> {
                Ok(Top::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Top<'de>, E> {
                Ok(Top::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Top<'de>, E> {
                Ok(Top::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Top<'de>, E> {
                Ok(Top::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Top<'de>, E> {
                Ok(Top::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// Read a JSON text.
pub fn parse(text: &str) -> serde_json::Result<Top<'_>> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_a_map() {
        let Ok(Top::Object(o)) = parse(r#"{"t":"report","a\"b":1,"n":[1,{"x":2}],"t":"ack"}"#)
        else {
            panic!()
        };
        assert_eq!(o.get("t"), Some(&Value::from("ack")));
        assert_eq!(o.get("a\"b"), Some(&Value::from(1)));
        assert!(o.contains_key("n") && !o.contains_key("x"));
        let v: Value =
            serde_json::from_str(r#"{"t":"report","a\"b":1,"n":[1,{"x":2}],"t":"ack"}"#).unwrap();
        assert_eq!(o.to_value(), v);
        for other in ["[1,2]", "\"s\"", "1", "-1", "1.5", "true", "null"] {
            assert!(matches!(parse(other), Ok(Top::Other)), "{other}");
        }
        // Errors are serde_json's own, as a Value parse gives them.
        for bad in ["{", "{\"a\":}", "[1,", "{} x", "", "{\"a\" 1}"] {
            let want = serde_json::from_str::<Value>(bad).unwrap_err().to_string();
            let got = parse(bad).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), Some(want.as_str()), "{bad}");
        }
    }
}
