//! Conversions between PHP values and what the core takes: JSON args,
//! settings and options, task records.

use crate::errors::invalid;
use async_engine_core::task::MAX_ARGS_DEPTH;
use async_engine_core::Scalar;
use ext_php_rs::boxed::ZBox;
use ext_php_rs::convert::{FromZval, IntoZval, StubLiteral};
use ext_php_rs::error::Result as ZResult;
use ext_php_rs::exception::PhpResult;
use ext_php_rs::flags::DataType;
use ext_php_rs::types::array::Iter;
use ext_php_rs::types::{ArrayKey, ZendHashTable, Zval};
use serde_json::Value;

/// A PHP `string` parameter as raw bytes, so invalid UTF-8 gets our own
/// precise error instead of a generic type error.
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> FromZval<'a> for Bytes<'a> {
    const TYPE: DataType = DataType::String;

    fn from_zval(zval: &'a Zval) -> Option<Self> {
        zval.zend_str().map(|s| Bytes(s.as_bytes()))
    }
}

impl Bytes<'_> {
    /// The string as UTF-8, or an `InvalidTask` naming the parameter.
    pub fn utf8(&self, what: &str) -> PhpResult<&str> {
        std::str::from_utf8(self.0).map_err(|e| {
            invalid(format!(
                "{what} is not valid UTF-8 (bad byte at offset {})",
                e.valid_up_to()
            ))
        })
    }

    /// The string as UTF-8 text without NUL bytes and at most `max` bytes
    /// long, or an `InvalidTask` naming the parameter.
    pub fn text(&self, what: &str, max: usize) -> PhpResult<&str> {
        if self.0.len() > max {
            return Err(invalid(format!(
                "{what} is {} bytes long; the limit is {max}",
                self.0.len()
            )));
        }
        let text = self.utf8(what)?;
        if let Some(at) = text.find('\0') {
            return Err(invalid(format!(
                "{what} contains a NUL byte (at offset {at})"
            )));
        }
        Ok(text)
    }
}

/// Longest task id accepted (ids are 26 characters; a longer one is a mistake).
pub const MAX_ID_LEN: usize = 128;

/// A PHP `array` parameter that defaults to `[]`.
pub struct ArrayArg<'a>(pub Option<&'a ZendHashTable>);

/// The `[]` default of an [`ArrayArg`].
pub struct EmptyArray;

impl From<EmptyArray> for ArrayArg<'_> {
    fn from(_: EmptyArray) -> Self {
        ArrayArg(None)
    }
}

impl StubLiteral for ArrayArg<'_> {
    fn stub_literal(&self) -> String {
        "[]".into()
    }
}

impl<'a> FromZval<'a> for ArrayArg<'a> {
    const TYPE: DataType = DataType::Array;

    fn from_zval(zval: &'a Zval) -> Option<Self> {
        zval.array().map(|a| ArrayArg(Some(a)))
    }
}

impl<'a> ArrayArg<'a> {
    /// The entries, none for the default.
    pub fn iter(&self) -> impl Iterator<Item = (Key, &'a Zval)> {
        self.0.into_iter().flat_map(entries)
    }
}

/// An array key as PHP holds it: an integer, or a string of any bytes.
pub enum Key {
    /// An integer key.
    Int(i64),
    /// A string key (not necessarily UTF-8).
    Bytes(Vec<u8>),
}

impl Key {
    /// The key as messages and names show it (invalid UTF-8 replaced).
    pub fn name(&self) -> String {
        match self {
            Key::Int(i) => i.to_string(),
            Key::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        }
    }
}

/// Iterates an array's entries without assuming its string keys are UTF-8.
pub struct Entries<'a>(Iter<'a>);

impl<'a> Iterator for Entries<'a> {
    type Item = (Key, &'a Zval);

    fn next(&mut self) -> Option<Self::Item> {
        let (key, value) = self.0.next_zval()?;
        let key = match key.long() {
            Some(i) => Key::Int(i),
            None => Key::Bytes(
                key.zend_str()
                    .map(|s| s.as_bytes().to_vec())
                    .unwrap_or_default(),
            ),
        };
        Some((key, value))
    }
}

/// The entries of `table`.
pub fn entries(table: &ZendHashTable) -> Entries<'_> {
    Entries(table.iter())
}

/// The PHP type name of a value, as error messages show it.
pub fn type_name(z: &Zval) -> String {
    let z = z.dereference();
    if let Some(obj) = z.object() {
        let class = obj.get_class_name().unwrap_or_else(|_| "object".into());
        return if class == "Closure" {
            "a closure".into()
        } else {
            format!("an object of class {class}")
        };
    }
    match z.get_type() {
        DataType::Resource => "a resource",
        DataType::Array => "array",
        DataType::Long => "int",
        DataType::Double => "float",
        DataType::String => "string",
        DataType::Null => "null",
        DataType::True | DataType::False | DataType::Bool => "bool",
        _ => "a value of another type",
    }
    .into()
}

/// A setting's or option's value.
pub fn scalar(z: &Zval) -> Scalar {
    let z = z.dereference();
    if z.is_null() {
        Scalar::Null
    } else if let Some(b) = z.bool() {
        Scalar::Bool(b)
    } else if let Some(i) = z.long() {
        Scalar::Int(i)
    } else if let Some(f) = z.double() {
        Scalar::Float(f)
    } else if let Some(s) = z.zend_str() {
        match std::str::from_utf8(s.as_bytes()) {
            Ok(text) => Scalar::Str(text.to_string()),
            Err(_) => Scalar::Other("a string that is not valid UTF-8".into()),
        }
    } else {
        Scalar::Other(type_name(z))
    }
}

/// Encodes task args as JSON text, refusing anything JSON cannot carry back
/// to PHP as it was: objects, closures, resources, NAN/INF, invalid UTF-8,
/// nesting deeper than the limit.
pub fn args_to_json(args: &ArrayArg<'_>) -> PhpResult<String> {
    let mut out = Vec::with_capacity(64);
    match args.0 {
        None => out.extend_from_slice(b"[]"),
        Some(a) => write_array(a, &mut out, 1, &mut String::from("$args"))?,
    }
    // Every piece written is valid UTF-8.
    Ok(String::from_utf8(out).unwrap_or_default())
}

fn write_array(
    a: &ZendHashTable,
    out: &mut Vec<u8>,
    depth: usize,
    path: &mut String,
) -> PhpResult<()> {
    if depth > MAX_ARGS_DEPTH {
        return Err(invalid(format!(
            "args are nested deeper than {MAX_ARGS_DEPTH} levels at {path} (or refer to themselves)"
        )));
    }
    let list = entries(a)
        .enumerate()
        .all(|(i, (k, _))| matches!(k, Key::Int(n) if n == i as i64));
    out.push(if list { b'[' } else { b'{' });
    for (i, (key, value)) in entries(a).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let len = path.len();
        match &key {
            Key::Int(n) => path.push_str(&format!("[{n}]")),
            other => path.push_str(&format!("['{}']", other.name())),
        }
        if !list {
            let name = match &key {
                Key::Int(n) => n.to_string(),
                Key::Bytes(b) => std::str::from_utf8(b)
                    .map_err(|_| {
                        invalid(format!("args hold a key that is not valid UTF-8 at {path}"))
                    })?
                    .to_string(),
            };
            serde_json::to_writer(&mut *out, &name).map_err(|e| invalid(e.to_string()))?;
            out.push(b':');
        }
        write_value(value, out, depth, path)?;
        path.truncate(len);
    }
    out.push(if list { b']' } else { b'}' });
    Ok(())
}

fn write_value(z: &Zval, out: &mut Vec<u8>, depth: usize, path: &mut String) -> PhpResult<()> {
    let z = z.dereference();
    if z.is_null() {
        out.extend_from_slice(b"null");
    } else if let Some(b) = z.bool() {
        out.extend_from_slice(if b { b"true" } else { b"false" });
    } else if let Some(i) = z.long() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(f) = z.double() {
        if !f.is_finite() {
            return Err(invalid(format!(
                "args hold {f} at {path}; JSON has no NAN or INF"
            )));
        }
        serde_json::to_writer(&mut *out, &f).map_err(|e| invalid(e.to_string()))?;
    } else if let Some(s) = z.zend_str() {
        let s = std::str::from_utf8(s.as_bytes()).map_err(|e| {
            invalid(format!(
                "args hold a string that is not valid UTF-8 at {path} (bad byte at offset {})",
                e.valid_up_to()
            ))
        })?;
        serde_json::to_writer(&mut *out, s).map_err(|e| invalid(e.to_string()))?;
    } else if let Some(a) = z.array() {
        write_array(a, out, depth + 1, path)?;
    } else {
        return Err(invalid(format!(
            "args hold {} at {path}; only null, bool, int, float, string and arrays of them can be stored",
            type_name(z)
        )));
    }
    Ok(())
}

/// Decodes stored JSON args into a PHP array.
pub fn json_to_array(json: &str) -> PhpResult<ZBox<ZendHashTable>> {
    let value: Value = serde_json::from_str(json).map_err(|e| {
        crate::errors::to_php(async_engine_core::Error::Storage(format!(
            "stored args are not valid JSON: {e}"
        )))
    })?;
    match value_to_zval(value)?.array() {
        Some(a) => Ok(a.to_owned()),
        None => Ok(ZendHashTable::new()),
    }
}

/// Converts a JSON value to the PHP value `json_decode(…, true)` gives.
pub fn value_to_zval(v: Value) -> ZResult<Zval> {
    Ok(match v {
        Value::Null => Zval::null(),
        Value::Bool(b) => b.into_zval(false)?,
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into_zval(false)?,
            None => n.as_f64().unwrap_or(0.0).into_zval(false)?,
        },
        Value::String(s) => s.into_zval(false)?,
        Value::Array(items) => {
            let mut a = ZendHashTable::with_capacity(items.len() as u32);
            for item in items {
                a.push(value_to_zval(item)?)?;
            }
            a.into_zval(false)?
        }
        Value::Object(map) => {
            let mut a = ZendHashTable::with_capacity(map.len() as u32);
            for (k, item) in map {
                a.insert(ArrayKey::from(k), value_to_zval(item)?)?;
            }
            a.into_zval(false)?
        }
    })
}
