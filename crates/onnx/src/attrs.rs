//! Typed access to a node's attributes. Errors read
//! `node '{name}' ({op_type}), attribute '{attr}': …` ([`ImportError::Attribute`]).

use crate::error::ImportError;
use crate::proto::attribute_proto::AttributeType;
use crate::proto::{AttributeProto, NodeProto, TensorProto};

pub(crate) use crate::limits::MAX_ATTR_VALUE;

/// The attributes of one node.
#[derive(Clone, Copy)]
pub(crate) struct Attrs<'m> {
    node: &'m NodeProto,
    /// The node's display name (its name, or its first output's name when unnamed).
    name: &'m str,
}

impl<'m> Attrs<'m> {
    pub fn new(node: &'m NodeProto, name: &'m str) -> Self {
        Attrs { node, name }
    }

    /// An [`ImportError::Attribute`] for this node.
    pub fn error(&self, attr: &str, message: impl Into<String>) -> ImportError {
        ImportError::Attribute {
            node: self.name.to_string(),
            op_type: self.node.op_type().to_string(),
            attr: attr.to_string(),
            message: message.into(),
        }
    }

    /// The attribute called `attr`, if present; an error if it appears twice or refers to
    /// a function attribute (only valid inside function bodies).
    pub fn get(&self, attr: &str) -> Result<Option<&'m AttributeProto>, ImportError> {
        let mut found = self.node.attribute.iter().filter(|a| a.name() == attr);
        let first = found.next();
        if found.next().is_some() {
            return Err(self.error(attr, "appears more than once"));
        }
        if let Some(a) = first
            && !a.ref_attr_name().is_empty()
        {
            return Err(self.error(
                attr,
                format!(
                    "refers to function attribute '{}', which is only valid inside a function body",
                    a.ref_attr_name()
                ),
            ));
        }
        Ok(first)
    }

    pub fn has(&self, attr: &str) -> bool {
        self.node.attribute.iter().any(|a| a.name() == attr)
    }

    /// The attribute with its declared type checked against `want`.
    fn typed(
        &self,
        attr: &str,
        want: AttributeType,
    ) -> Result<Option<&'m AttributeProto>, ImportError> {
        let Some(a) = self.get(attr)? else {
            return Ok(None);
        };
        let ty = attr_type(a);
        if ty != want {
            return Err(self.error(
                attr,
                format!(
                    "expected type {}, found {}",
                    want.as_str_name(),
                    ty.as_str_name()
                ),
            ));
        }
        Ok(Some(a))
    }

    pub fn int(&self, attr: &str) -> Result<Option<i64>, ImportError> {
        Ok(self.typed(attr, AttributeType::Int)?.map(|a| a.i()))
    }

    pub fn int_or(&self, attr: &str, default: i64) -> Result<i64, ImportError> {
        Ok(self.int(attr)?.unwrap_or(default))
    }

    /// A 0/1 flag; other values are an error.
    pub fn flag(&self, attr: &str, default: bool) -> Result<bool, ImportError> {
        match self.int(attr)? {
            None => Ok(default),
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            Some(v) => Err(self.error(attr, format!("must be 0 or 1, got {v}"))),
        }
    }

    pub fn ints(&self, attr: &str) -> Result<Option<&'m [i64]>, ImportError> {
        Ok(self
            .typed(attr, AttributeType::Ints)?
            .map(|a| a.ints.as_slice()))
    }

    pub fn float(&self, attr: &str) -> Result<Option<f32>, ImportError> {
        Ok(self.typed(attr, AttributeType::Float)?.map(|a| a.f()))
    }

    pub fn float_or(&self, attr: &str, default: f32) -> Result<f32, ImportError> {
        Ok(self.float(attr)?.unwrap_or(default))
    }

    pub fn floats(&self, attr: &str) -> Result<Option<&'m [f32]>, ImportError> {
        Ok(self
            .typed(attr, AttributeType::Floats)?
            .map(|a| a.floats.as_slice()))
    }

    pub fn string(&self, attr: &str) -> Result<Option<&'m str>, ImportError> {
        match self.typed(attr, AttributeType::String)? {
            None => Ok(None),
            Some(a) => std::str::from_utf8(a.s())
                .map(Some)
                .map_err(|_| self.error(attr, "is not valid UTF-8")),
        }
    }

    pub fn tensor(&self, attr: &str) -> Result<Option<&'m TensorProto>, ImportError> {
        Ok(self
            .typed(attr, AttributeType::Tensor)?
            .and_then(|a| a.t.as_ref()))
    }

    /// Integers that must all lie in `min..=MAX_ATTR_VALUE`, converted to `usize`.
    pub fn usizes(&self, attr: &str, min: usize) -> Result<Option<Vec<usize>>, ImportError> {
        let Some(v) = self.ints(attr)? else {
            return Ok(None);
        };
        v.iter()
            .map(|&x| {
                usize::try_from(x)
                    .ok()
                    .filter(|&u| (min..=MAX_ATTR_VALUE).contains(&u))
                    .ok_or_else(|| {
                        self.error(
                            attr,
                            format!("values must lie in {min}..={MAX_ATTR_VALUE}, got {v:?}"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Exactly `N` integers, each at least `min`.
    pub fn usize_array<const N: usize>(
        &self,
        attr: &str,
        min: usize,
    ) -> Result<Option<[usize; N]>, ImportError> {
        let Some(v) = self.usizes(attr, min)? else {
            return Ok(None);
        };
        <[usize; N]>::try_from(v.as_slice())
            .map(Some)
            .map_err(|_| self.error(attr, format!("expected {N} values, got {v:?}")))
    }
}

/// The declared type, or for old models that leave it unset, the type implied by the
/// field that holds a value.
fn attr_type(a: &AttributeProto) -> AttributeType {
    if let Some(t) = a.r#type
        && let Ok(t) = AttributeType::try_from(t)
        && t != AttributeType::Undefined
    {
        return t;
    }
    if a.f.is_some() {
        AttributeType::Float
    } else if a.i.is_some() {
        AttributeType::Int
    } else if a.s.is_some() {
        AttributeType::String
    } else if a.t.is_some() {
        AttributeType::Tensor
    } else if a.g.is_some() {
        AttributeType::Graph
    } else if !a.floats.is_empty() {
        AttributeType::Floats
    } else if !a.ints.is_empty() {
        AttributeType::Ints
    } else if !a.strings.is_empty() {
        AttributeType::Strings
    } else if !a.tensors.is_empty() {
        AttributeType::Tensors
    } else if !a.graphs.is_empty() {
        AttributeType::Graphs
    } else {
        AttributeType::Undefined
    }
}
