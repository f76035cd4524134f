//! A JSON object's top-level fields, read in one pass without a map: keys
//! and plain strings borrowed from the text, numbers with the digits they
//! were written with, anything else as `serde_json::Value`, in the order
//! they came. A Kinetid message has a dozen fields, so a scan finds one
//! faster than hashing its name, and nothing is copied.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// One field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    /// A string without escapes or control characters, as in the text.
    Str(&'a str),
    /// A non-negative integer that fits a u64.
    U64(u64),
    /// A decimal of at most 15 digits without an exponent, and its digits
    /// as written.
    Dec(f64, &'a str),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// Anything else (an escaped string, a negative or long number, an
    /// array, an object), as serde_json reads it; boxed, as such values
    /// are rare and a `Value` is 72 bytes: unboxed, a report's dozen
    /// fields took more than the allocator's per-thread cache serves.
    Json(Box<Value>),
}

impl<'a> Val<'a> {
    /// The string, as `Value::as_str` has it.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Json(v) => v.as_str(),
            _ => None,
        }
    }

    /// The number as a u64, as `Value::as_u64` has it.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Val::U64(x) => Some(*x),
            Val::Json(v) => v.as_u64(),
            _ => None,
        }
    }

    /// The number as an f64, as `Value::as_f64` has it.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::U64(x) => Some(*x as f64),
            Val::Dec(x, _) => Some(*x),
            Val::Json(v) => v.as_f64(),
            _ => None,
        }
    }

    /// The boolean, as `Value::as_bool` has it.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(*b),
            Val::Json(v) => v.as_bool(),
            _ => None,
        }
    }

    /// The array, as `Value::as_array` has it.
    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Val::Json(v) => v.as_array(),
            _ => None,
        }
    }

    /// An integer serde_json would hold as a u64 (`Value::is_u64`).
    pub fn is_u64(&self) -> bool {
        match self {
            Val::U64(_) => true,
            Val::Json(v) => v.is_u64(),
            _ => false,
        }
    }

    /// A number exactly as `{}` prints it as an f64, when that can be
    /// read off its digits: a decimal of at most 15 digits is the one such
    /// decimal its f64 reads back as (an f64 holds 15.95 digits), so its
    /// shortest form is its own digits without trailing zeros; an integer
    /// below 2^53 is exact. `None`: format the f64.
    pub fn shortest(&self) -> Option<&str> {
        match self {
            Val::Dec(_, t) => {
                let t = t.trim_end_matches('0');
                Some(t.strip_suffix('.').unwrap_or(t))
            }
            _ => None,
        }
    }

    /// The value as serde_json holds it.
    pub fn to_value(&self) -> Value {
        match self {
            Val::Str(s) => Value::String((*s).to_owned()),
            Val::U64(x) => Value::from(*x),
            Val::Dec(x, _) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Val::Bool(b) => Value::Bool(*b),
            Val::Null => Value::Null,
            Val::Json(v) => (**v).clone(),
        }
    }
}

/// As serde_json writes the value.
impl fmt::Display for Val<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::U64(x) => write!(f, "{x}"),
            Val::Bool(b) => write!(f, "{b}"),
            Val::Null => f.write_str("null"),
            Val::Json(v) => write!(f, "{v}"),
            other => write!(f, "{}", other.to_value()),
        }
    }
}

/// The fields of one object, first to last.
#[derive(Debug, Default)]
pub struct Obj<'a>(Vec<(Cow<'a, str>, Val<'a>)>);

impl<'a> Obj<'a> {
    /// The fields, first to last (repeated keys as often as they came).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Val<'a>)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

impl Obj<'_> {
    /// A field's value; of repeated keys the last wins, as in a map.
    pub fn get(&self, k: &str) -> Option<&Val<'_>> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| same(n, k))
            .map(|(_, v)| v)
    }

    /// Is the field there?
    pub fn contains_key(&self, k: &str) -> bool {
        self.0.iter().any(|(n, _)| same(n, k))
    }

    /// The object read into a struct, field by field (no second pass over
    /// the text). A struct refuses a repeated field where a map keeps the
    /// last: then it is read from [`Obj::to_value`].
    pub fn read<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        let fields = self.0.iter().map(|(k, v)| (k.as_ref(), v.to_value()));
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
                .map(|(k, v)| (k.to_string(), v.to_value()))
                .collect(),
        )
    }
}

/// Is key `n` the name `k`? The lengths and the first and last bytes tell
/// a report's keys apart, so the bytes are compared (a call) only when the
/// key is most likely the one looked for.
fn same(n: &str, k: &str) -> bool {
    let (a, b) = (n.as_bytes(), k.as_bytes());
    a.len() == b.len() && a.first() == b.first() && a.last() == b.last() && a == b
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
                    v.push((k.0, Val::Json(Box::new(x))));
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
    if let Some(o) = flat(text) {
        return Ok(Top::Object(o));
    }
    serde_json::from_str(text)
}

/// The shape nearly every Kinetid message has, read by hand: one object
/// whose values are strings without escapes, booleans, null, non-negative
/// integers or decimals of at most 15 digits without an exponent. Anything
/// else (an escape, a nested value, a negative or long number, an error)
/// is `None`, and serde_json reads the text as before, so values and error
/// messages are serde_json's own. The numbers read here come out the same
/// as serde_json's: a decimal of at most 15 digits is its digits divided by
/// a power of ten, both exact in an f64, which rounds once, correctly.
fn flat(text: &str) -> Option<Obj<'_>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    // A report's dozen fields fit (and the allocator's fast path, which
    // room for 16 of them missed); a relayed one grows once.
    let mut fields = Vec::with_capacity(12);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let (k, after) = plain_str(text, i)?;
            i = skip_ws(b, after);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            let (v, after) = scalar(text, i)?;
            fields.push((Cow::Borrowed(k), v));
            i = skip_ws(b, after);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(Obj(fields))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// A string at `i` with no escape or control character, and where it ends.
fn plain_str(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let n = b[i + 1..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    if b[i + 1 + n] != b'"' {
        return None;
    }
    // Both ends are ASCII quotes, so the slice is on character boundaries.
    let s = text.get(i + 1..i + 1 + n)?;
    Some((s, i + 1 + n + 1))
}

/// Powers of ten exact in an f64.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

fn scalar(text: &str, i: usize) -> Option<(Val<'_>, usize)> {
    let b = text.as_bytes();
    match *b.get(i)? {
        b'"' => plain_str(text, i).map(|(s, e)| (Val::Str(s), e)),
        b't' if b[i..].starts_with(b"true") => Some((Val::Bool(true), i + 4)),
        b'f' if b[i..].starts_with(b"false") => Some((Val::Bool(false), i + 5)),
        b'n' if b[i..].starts_with(b"null") => Some((Val::Null, i + 4)),
        b'0'..=b'9' => {
            // Digits read and counted in one pass.
            let mut m: u64 = 0;
            let mut j = i;
            while let Some(&c) = b.get(j).filter(|c| c.is_ascii_digit()) {
                m = m.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                j += 1;
            }
            let int_end = j;
            // A leading zero stands alone.
            if b[i] == b'0' && int_end > i + 1 {
                return None;
            }
            let mut frac = 0;
            if b.get(j) == Some(&b'.') {
                j += 1;
                while let Some(&c) = b.get(j).filter(|c| c.is_ascii_digit()) {
                    m = m.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                    j += 1;
                }
                frac = j - int_end - 1;
                if frac == 0 {
                    return None;
                }
            }
            if matches!(b.get(j), Some(b'e' | b'E' | b'.')) {
                return None;
            }
            // 19 digits always fit a u64 (so `m` did not wrap), and 15
            // are exact in an f64.
            let digits = (int_end - i) + frac;
            if digits > if frac == 0 { 19 } else { 15 } {
                return None;
            }
            if frac == 0 {
                Some((Val::U64(m), j))
            } else {
                let x = m as f64 / POW10[frac];
                // Both ends are ASCII digits: on character boundaries.
                Some((Val::Dec(x, text.get(i..j)?), j))
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde_json alone makes of a text.
    fn slow(text: &str) -> Option<Vec<(String, Value)>> {
        match serde_json::from_str::<Top<'_>>(text).ok()? {
            Top::Object(o) => Some(
                o.0.into_iter()
                    .map(|(k, v)| (k.into(), v.to_value()))
                    .collect(),
            ),
            Top::Other => None,
        }
    }

    #[test]
    fn a_reports_fields_fit_the_allocators_fast_path() {
        // glibc serves blocks of up to 1032 bytes from a per-thread cache;
        // the room `flat` asks for must stay under that.
        let room = 12 * std::mem::size_of::<(Cow<'_, str>, Val<'_>)>();
        assert!(room <= 1024, "{room} bytes for a report's fields");
    }

    #[test]
    fn the_hand_reader_agrees_with_serde_json() {
        let mut texts: Vec<String> = [
            r#"{"t":"report","id":3,"dev":"KN-00A1B2C3D4E5","ts":1767225662,"seq":7,"on":true,"power_w":3.1,"voltage_v":230.9,"current_a":0.02,"pf":0.55,"freq_hz":50.0,"energy_wh":88.2}"#,
            r#" { "t" : "ack" , "re" : 2 } "#,
            "{}",
            "{\"a\":null,\"b\":false,\"c\":\"\",\"a\":0}",
            r#"{"x":18446744073709551615}"#,
            r#"{"x":99999999999999999999}"#,
            r#"{"x":0.1,"y":123456789012345.6,"z":1234567890123456.7}"#,
            r#"{"x":50.0,"y":0.000,"z":0.00001,"w":12345678901234.5,"v":1422.30,"u":0.0001}"#,
            r#"{"x":-1}"#,
            r#"{"x":-0}"#,
            r#"{"x":1e3}"#,
            r#"{"x":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":.5}"#,
            r#"{"x":1.5.2}"#,
            r#"{"x":"a\"b"}"#,
            r#"{"x":[1]}"#,
            r#"{"x":{"y":1}}"#,
            r#"{"x":1,}"#,
            r#"{"x":1} x"#,
            r#"{"x" 1}"#,
            r#"{"x":tru}"#,
            r#"{"x":"Grüße"}"#,
            "{\"x\":\"a\u{1}\"}",
            "{\"x\":1}\n",
            "{\"x\":1}\u{b}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Decimals of every length around the limits, against serde_json's
        // own rounding.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let int = seed % 10u64.pow((seed >> 60) as u32 % 10);
            let frac_len = (seed >> 40) as usize % 12;
            let frac: String = (0..frac_len)
                .map(|k| char::from(b'0' + ((seed >> (k * 4)) % 10) as u8))
                .collect();
            let num = if frac.is_empty() {
                int.to_string()
            } else {
                format!("{int}.{frac}")
            };
            texts.push(format!(r#"{{"n":{num}}}"#));
        }
        for t in &texts {
            let fast = flat(t).map(|o| {
                o.0.into_iter()
                    .map(|(k, v)| {
                        // A number's digits, read off as `{}` prints its f64.
                        if let (Some(d), Some(x)) = (v.shortest(), v.as_f64()) {
                            assert_eq!(d, format!("{x}"), "{t}");
                        }
                        (k.into_owned(), v.to_value())
                    })
                    .collect::<Vec<(String, Value)>>()
            });
            if let Some(f) = &fast {
                let want =
                    slow(t).unwrap_or_else(|| panic!("read by hand, refused by serde_json: {t}"));
                assert_eq!(f.len(), want.len(), "{t}");
                for ((fk, fv), (wk, wv)) in f.iter().zip(&want) {
                    assert_eq!(fk, wk, "{t}");
                    assert_eq!(fv, wv, "{t}");
                    if let (Some(a), Some(b)) = (fv.as_f64(), wv.as_f64()) {
                        assert_eq!(a.to_bits(), b.to_bits(), "{t}");
                    }
                    assert_eq!(fv.is_u64(), wv.is_u64(), "{t}");
                }
            }
            // Whatever the hand reader declines, parse gives serde_json's answer.
            let got = parse(t).map(|top| match top {
                Top::Object(o) => Some(o.to_value()),
                Top::Other => None,
            });
            match serde_json::from_str::<Value>(t) {
                Ok(v) => assert_eq!(
                    got.ok().flatten().unwrap_or(Value::Null),
                    if v.is_object() { v } else { Value::Null },
                    "{t}"
                ),
                Err(e) => assert_eq!(got.err().map(|x| x.to_string()), Some(e.to_string()), "{t}"),
            }
        }
        // The common shapes are read by hand.
        assert!(flat(&texts[0]).is_some());
        assert!(flat(&texts[1]).is_some());
    }

    #[test]
    fn reads_like_a_map() {
        let Ok(Top::Object(o)) = parse(r#"{"t":"report","a\"b":1,"n":[1,{"x":2}],"t":"ack"}"#)
        else {
            panic!()
        };
        assert_eq!(o.get("t").map(Val::to_value), Some(Value::from("ack")));
        assert_eq!(o.get("a\"b").map(Val::to_value), Some(Value::from(1)));
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
