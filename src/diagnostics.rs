//! Problems found in the objects, travelling back from source and compile to the
//! operator: `check` output, logs, and (in a cluster) status conditions and Events.

use std::fmt;

/// Which object a problem belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The object (or part of it) was left out; its routes fail closed.
    Error,
    /// The object works, but probably not as meant.
    Warning,
}

/// Which status condition a problem belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Category {
    /// The object's own fields (condition `Accepted`).
    #[default]
    Spec,
    /// Another object it names: a Secret, a target (condition `ResolvedRefs`).
    Reference,
}

/// One problem: the object, the field, what is wrong and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub object: ObjectRef,
    /// JSON path of the offending field, e.g. `spec.oidc.clientSecretRef.key`.
    pub field: String,
    pub severity: Severity,
    /// A CamelCase reason, used as the condition reason in a cluster.
    pub reason: &'static str,
    pub message: String,
    pub fix: String,
    pub category: Category,
}

impl Diagnostic {
    pub fn error(
        object: &ObjectRef,
        field: &str,
        reason: &'static str,
        message: String,
        fix: String,
    ) -> Self {
        Self {
            object: object.clone(),
            field: field.into(),
            severity: Severity::Error,
            reason,
            message,
            fix,
            category: Category::Spec,
        }
    }

    pub fn warning(
        object: &ObjectRef,
        field: &str,
        reason: &'static str,
        message: String,
        fix: String,
    ) -> Self {
        Self {
            object: object.clone(),
            field: field.into(),
            severity: Severity::Warning,
            reason,
            message,
            fix,
            category: Category::Spec,
        }
    }

    /// The same problem, as one with an object it refers to.
    pub fn of_reference(mut self) -> Self {
        self.category = Category::Reference;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.object)?;
        if !self.field.is_empty() {
            write!(f, " {}", self.field)?;
        }
        write!(f, ": {} ({})", self.message, self.reason)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}
