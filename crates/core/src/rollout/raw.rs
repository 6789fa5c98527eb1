//! Building blocks of the rollout specs as written (`rollout_config`).
//!
//! Each kind declares its written fields once, with [`raw_fields!`]: that gives the struct, the
//! list of its field names and a reader by name. A spec can then be read field by field before
//! its `kind` is known (the key may come last), each field handed to the kinds that take it, and
//! a field of another kind named as such instead of being dropped in silence.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, Visitor};
use serde::Deserialize;

/// The fields of one kind of rollout, as written: every one optional.
pub(crate) trait RawFields: Default {
    /// The names of the fields, as written.
    const FIELDS: &'static [&'static str];

    /// Reads the value of field `key`. The value of a key that is not a field is skipped (a
    /// `serde_ignored` deserializer reports it as unknown).
    fn read<'de, D: Deserializer<'de>>(&mut self, key: &str, value: D) -> Result<(), D::Error>;
}

/// Declares the written fields of one kind: the struct (each field as declared, usually an
/// `Option`), its [`RawFields`] and its `Deserialize` (a map of those fields). A field read by
/// other means than its type's `Deserialize` names the reader after `=`.
macro_rules! raw_fields {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident: $ty:ty $(= $read:path)?, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::rollout::raw::RawFields for $name {
            const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn read<'de, D: serde::Deserializer<'de>>(
                &mut self,
                key: &str,
                value: D,
            ) -> Result<(), D::Error> {
                match key {
                    $(stringify!($field) => {
                        self.$field = $crate::rollout::raw::raw_fields!(@read value $(, $read)?)?;
                    })*
                    _ => {
                        <serde::de::IgnoredAny as serde::Deserialize>::deserialize(value)?;
                    }
                }
                Ok(())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::rollout::raw::deserialize_fields(d, concat!("the fields of ", stringify!($name)))
            }
        }
    };
    (@read $value:ident) => { serde::Deserialize::deserialize($value) };
    (@read $value:ident, $read:path) => { $read($value) };
}
pub(crate) use raw_fields;

/// Hands the value of one field to [`RawFields::read`].
pub(crate) struct Field<'a, T> {
    pub raw: &'a mut T,
    pub key: &'a str,
}

impl<'de, T: RawFields> DeserializeSeed<'de> for Field<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, value: D) -> Result<(), D::Error> {
        self.raw.read(self.key, value)
    }
}

/// Reads a map of the fields of `T`, refusing a field written twice.
pub(crate) fn deserialize_fields<'de, T: RawFields, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<T, D::Error> {
    struct Fields<T>(&'static str, PhantomData<T>);

    impl<'de, T: RawFields> Visitor<'de> for Fields<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
            let mut raw = T::default();
            let mut seen = Vec::new();
            while let Some(key) = map.next_key::<String>()? {
                if seen.contains(&key) {
                    return Err(A::Error::custom(format_args!("duplicate field `{key}`")));
                }
                map.next_value_seed(Field {
                    raw: &mut raw,
                    key: &key,
                })?;
                seen.push(key);
            }
            Ok(raw)
        }
    }

    d.deserialize_map(Fields(expecting, PhantomData))
}

/// Reads a field whose `null` means "disabled" rather than "not written": `Some(None)`.
pub(crate) fn nullable<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A percentage as written, in basis points.
pub(crate) fn bp(name: &str, percent: f64, problems: &mut Vec<String>) -> u32 {
    if !(percent.is_finite() && (0.0..=100.0).contains(&percent)) {
        problems.push(format!(
            "{name}: must be a percentage in [0, 100], got {percent}"
        ));
        return 0;
    }
    (percent * 100.0).round() as u32
}

/// A version the kind cannot do without.
pub(crate) fn required(
    field: &Option<String>,
    name: &str,
    kind: &str,
    problems: &mut Vec<String>,
) -> String {
    field.clone().unwrap_or_else(|| {
        problems.push(format!("{name}: required for a {kind} rollout"));
        String::new()
    })
}
