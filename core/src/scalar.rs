//! Values of settings and options as PHP hands them over.

/// One PHP value, reduced to what settings and options can hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (ini values always arrive as strings).
    Str(String),
    /// Anything else, by its PHP type name (`array`, `object`, ...).
    Other(String),
}

impl Scalar {
    /// The value as an error message shows it: `null`, `12`, `'text'`, `array`.
    pub fn describe(&self) -> String {
        match self {
            Scalar::Null => "null".into(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => format!("{f:?}"),
            Scalar::Str(s) if s.len() > 64 => format!("a {}-byte string", s.len()),
            Scalar::Str(s) => format!("'{}'", s.escape_default()),
            Scalar::Other(t) => t.clone(),
        }
    }

    /// The value as a finite number, if it is an integer or a finite float.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::Float(f) if f.is_finite() => Some(*f),
            _ => None,
        }
    }
}
