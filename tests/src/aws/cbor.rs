//! The CBOR of the Smithy RPC v2 CBOR protocol, which CloudWatch's SDK clients speak
//! (`tests/src/aws/cloudwatch.rs`): a request body read into JSON (so that serde reads it
//! into the operation's input, the call log shows it, and the botocore check validates it
//! against the model's shapes), and an answer written from [`Cbor`].
//!
//! The protocol's only CBOR extension is the timestamp, tag 1 over the epoch seconds as a
//! double (what the SDK's decoder insists on); a request's timestamps are read into JSON as
//! their epoch seconds. Byte strings, bignums and non-finite numbers are refused: no input
//! of the operations the lab emulates has one, and CloudWatch refuses NaN and the
//! infinities as values.

use std::time::{SystemTime, UNIX_EPOCH};

use minicbor::data::{IanaTag, Tag, Type};
use serde_json::{Map, Number, Value};

/// How deep a request may nest: CloudWatch's inputs are a few levels deep, and a bound keeps
/// a hostile body from exhausting the stack.
const MAX_DEPTH: usize = 32;

/// An answer's value, as the protocol encodes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cbor {
    /// An integer member (`Period`, `EvaluationPeriods`).
    Int(i64),
    /// A double member (`Threshold`): always written as a double, which the SDK requires.
    Double(f64),
    /// A boolean member.
    Bool(bool),
    /// A string member.
    Text(String),
    /// A timestamp member: tag 1 over the epoch seconds as a double.
    Timestamp(SystemTime),
    /// A list.
    Array(Vec<Cbor>),
    /// A structure, its members in the order given.
    Map(Vec<(String, Cbor)>),
}

impl Cbor {
    /// A structure from its members, leaving out the absent ones.
    pub(crate) fn map<'a>(members: impl IntoIterator<Item = (&'a str, Option<Cbor>)>) -> Self {
        Self::Map(
            members
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                .collect(),
        )
    }

    /// A string member.
    pub(crate) fn text(s: impl Into<String>) -> Self {
        Self::Text(s.into())
    }

    /// The value's CBOR encoding, definite lengths throughout.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut encoder = minicbor::Encoder::new(Vec::new());
        self.write(&mut encoder);
        encoder.into_writer()
    }

    fn write(&self, e: &mut minicbor::Encoder<Vec<u8>>) {
        // Writing into a Vec cannot fail (its error type is `Infallible`), so the results
        // carry nothing to handle.
        let _ = match self {
            Self::Int(n) => e.i64(*n),
            Self::Double(x) => e.f64(*x),
            Self::Bool(b) => e.bool(*b),
            Self::Text(s) => e.str(s),
            Self::Timestamp(at) => e
                .tag(Tag::from(IanaTag::Timestamp))
                .and_then(|e| e.f64(epoch_seconds(*at))),
            Self::Array(items) => {
                let _ = e.array(items.len() as u64);
                for item in items {
                    item.write(e);
                }
                Ok(&mut *e)
            }
            Self::Map(members) => {
                let _ = e.map(members.len() as u64);
                for (key, value) in members {
                    let _ = e.str(key);
                    value.write(e);
                }
                Ok(&mut *e)
            }
        };
    }

    /// The value as JSON, timestamps as epoch seconds: what the call log shows of an answer.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Self::Int(n) => Value::from(*n),
            Self::Double(x) => Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Self::Bool(b) => Value::Bool(*b),
            Self::Text(s) => Value::String(s.clone()),
            Self::Timestamp(at) => {
                Number::from_f64(epoch_seconds(*at)).map_or(Value::Null, Value::Number)
            }
            Self::Array(items) => Value::Array(items.iter().map(Self::to_json).collect()),
            Self::Map(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Seconds since the epoch, with milliseconds (the protocol's precision).
fn epoch_seconds(at: SystemTime) -> f64 {
    let millis = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    millis as f64 / 1000.0
}

/// A request body read into JSON; an empty body is an empty structure (the SDK sends one for
/// an input with no members set). The error says what was wrong, for a
/// `SerializationException`.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    if body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let mut d = minicbor::Decoder::new(body);
    let value = item(&mut d, 0)?;
    if d.position() != body.len() {
        return Err(format!(
            "{} bytes after the CBOR value",
            body.len() - d.position()
        ));
    }
    Ok(value)
}

fn item(d: &mut minicbor::Decoder<'_>, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let err = |e: minicbor::decode::Error| e.to_string();
    let finite = |x: f64| {
        Number::from_f64(x)
            .map(Value::Number)
            .ok_or_else(|| format!("the number {x} is not finite"))
    };
    match d.datatype().map_err(err)? {
        Type::Null | Type::Undefined => {
            d.skip().map_err(err)?;
            Ok(Value::Null)
        }
        Type::Bool => Ok(Value::Bool(d.bool().map_err(err)?)),
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => Ok(Value::from(d.u64().map_err(err)?)),
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
            let n = d.int().map_err(err)?;
            let n = i64::try_from(n).map_err(|_| "an integer beyond 64 bits".to_string())?;
            Ok(Value::from(n))
        }
        Type::F16 | Type::F32 | Type::F64 => finite(d.f64().map_err(err)?),
        Type::String | Type::StringIndef => {
            let mut text = String::new();
            for chunk in d.str_iter().map_err(err)? {
                text.push_str(chunk.map_err(err)?);
            }
            Ok(Value::String(text))
        }
        Type::Array | Type::ArrayIndef => {
            let len = d.array().map_err(err)?;
            let mut items = Vec::new();
            match len {
                Some(n) => {
                    for _ in 0..n {
                        items.push(item(d, depth + 1)?);
                    }
                }
                None => {
                    while d.datatype().map_err(err)? != Type::Break {
                        items.push(item(d, depth + 1)?);
                    }
                    d.skip().map_err(err)?;
                }
            }
            Ok(Value::Array(items))
        }
        Type::Map | Type::MapIndef => {
            let len = d.map().map_err(err)?;
            let mut members = Map::new();
            let mut member = |d: &mut minicbor::Decoder<'_>| -> Result<(), String> {
                let Value::String(key) = item(d, depth + 1)? else {
                    return Err("a map key that is not a string".to_string());
                };
                let value = item(d, depth + 1)?;
                members.insert(key, value);
                Ok(())
            };
            match len {
                Some(n) => {
                    for _ in 0..n {
                        member(d)?;
                    }
                }
                None => {
                    while d.datatype().map_err(err)? != Type::Break {
                        member(d)?;
                    }
                    d.skip().map_err(err)?;
                }
            }
            Ok(Value::Object(members))
        }
        Type::Tag => {
            let tag = d.tag().map_err(err)?;
            if tag != Tag::from(IanaTag::Timestamp) {
                return Err(format!("CBOR tag {} is not a timestamp", u64::from(tag)));
            }
            match item(d, depth + 1)? {
                Value::Number(n) => Ok(Value::Number(n)),
                _ => Err("a timestamp that is not a number of seconds".to_string()),
            }
        }
        other => Err(format!("a CBOR {other} where the protocol has none")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_through_the_decoder() {
        let at = UNIX_EPOCH + std::time::Duration::from_millis(1_767_225_600_250);
        let answer = Cbor::map([
            ("Name", Some(Cbor::text("a"))),
            ("Absent", None),
            ("Period", Some(Cbor::Int(60))),
            ("Threshold", Some(Cbor::Double(1.0))),
            ("On", Some(Cbor::Bool(true))),
            ("At", Some(Cbor::Timestamp(at))),
            ("List", Some(Cbor::Array(vec![Cbor::Int(-3)]))),
        ]);
        let bytes = answer.encode();
        let json = decode(&bytes).unwrap();
        assert_eq!(json, answer.to_json());
        assert_eq!(
            json,
            serde_json::json!({
                "Name": "a", "Period": 60, "Threshold": 1.0, "On": true,
                "At": 1_767_225_600.25, "List": [-3]
            })
        );
        // The threshold is a double on the wire (major type 7, 0xfb), as the SDK requires.
        let threshold = bytes
            .windows(9)
            .position(|w| w[..9] == *b"Threshold")
            .unwrap();
        assert_eq!(bytes[threshold + 9], 0xfb);
    }

    #[test]
    fn the_sdks_request_encoding_is_read() {
        // What aws-smithy-cbor writes: an indefinite map, a definite array, a timestamp.
        let mut e = minicbor::Encoder::new(Vec::new());
        e.begin_map().unwrap();
        e.str("Namespace").unwrap().str("ValkeyDR").unwrap();
        e.str("MetricData").unwrap().array(1).unwrap();
        e.begin_map().unwrap();
        e.str("Value").unwrap().f64(1.0).unwrap();
        e.str("Timestamp").unwrap().tag(IanaTag::Timestamp).unwrap();
        e.f64(10.5).unwrap();
        e.str("StorageResolution").unwrap().i32(60).unwrap();
        e.end().unwrap();
        e.end().unwrap();
        let json = decode(&e.into_writer()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Namespace": "ValkeyDR",
                "MetricData": [{"Value": 1.0, "Timestamp": 10.5, "StorageResolution": 60}]})
        );
        assert_eq!(decode(&[]).unwrap(), serde_json::json!({}));
    }

    #[test]
    fn what_the_protocol_never_sends_is_refused() {
        let mut e = minicbor::Encoder::new(Vec::new());
        e.f64(f64::NAN).unwrap();
        assert!(decode(&e.into_writer()).unwrap_err().contains("not finite"));
        let mut e = minicbor::Encoder::new(Vec::new());
        e.bytes(b"x").unwrap();
        assert!(decode(&e.into_writer()).is_err());
        let mut e = minicbor::Encoder::new(Vec::new());
        e.str("a").unwrap().str("b").unwrap();
        assert!(decode(&e.into_writer()).unwrap_err().contains("after"));
        let deep = [vec![0x81u8; MAX_DEPTH + 2], vec![0x01]].concat();
        assert!(decode(&deep).unwrap_err().contains("deeper"));
    }
}
