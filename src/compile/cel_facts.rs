//! What authorization expressions read, handed to CEL without copying it first:
//! `claims` and `request` are views that convert a field only when an expression
//! reads it. Binding them as ordinary variables converts every claim and header on
//! every request, which costs more than evaluating the rules.

use std::collections::BTreeMap;

use cel::ExecutionError;
use cel::common::traits::{Container, Indexer};
use cel::common::types::{self, CelString, Type};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use serde_json::{Map, Value};

use super::mtls::CertFacts;

/// The variables of one decision: `claims`, `request` and `source`.
pub struct Facts<'a> {
    claims: JsonObject<'a>,
    request: RequestView<'a>,
    source: &'static str,
}

impl<'a> Facts<'a> {
    pub fn new(
        claims: &'a Map<String, Value>,
        request: RequestView<'a>,
        source: &'static str,
    ) -> Self {
        Self {
            claims: JsonObject(claims),
            request,
            source,
        }
    }
}

impl VariableResolver for Facts<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "claims" => Some(CowVal::Borrowed(&self.claims)),
            "request" => Some(CowVal::Borrowed(&self.request)),
            "source" => Some(CowVal::owned(CelString::from(self.source))),
            _ => None,
        }
    }
}

/// A JSON object as a CEL map whose values are converted when read.
#[derive(Debug, Clone, Copy)]
struct JsonObject<'a>(&'a Map<String, Value>);

/// `request`: `method`, `path`, `host`, `headers`, `sourceIp` when the client's
/// address is known, and `clientCert` when the connection's client certificate was
/// verified.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a BTreeMap<String, String>,
    pub client_cert: Option<&'a CertFacts>,
    pub source_ip: Option<std::net::IpAddr>,
}

/// The string a map key holds, if it is one.
fn key_text(key: &dyn Val) -> Option<&str> {
    key.downcast_ref::<CelString>().map(|s| s.inner())
}

fn no_such_key(key: &dyn Val) -> ExecutionError {
    ExecutionError::NoSuchKey(std::sync::Arc::new(
        key_text(key).unwrap_or_default().to_owned(),
    ))
}

/// One JSON value as CEL's own (strings borrow, compound values are converted whole).
fn json_val<'w>(value: &'w Value) -> Result<Box<dyn Val + 'w>, ExecutionError> {
    match value {
        Value::String(s) => Ok(Box::new(CelString::from(s.as_str()))),
        other => {
            let converted = cel::to_value(other)
                .map_err(|e| ExecutionError::function_error("claims", e.to_string()))?;
            Box::<dyn Val>::try_from(converted)
                .map_err(|_| ExecutionError::function_error("claims", "unconvertible value"))
        }
    }
}

macro_rules! map_val {
    ($ty:ident) => {
        impl Val for $ty<'_> {
            fn get_type(&self) -> &Type {
                &types::MAP_TYPE
            }

            fn cel_type() -> &'static Type {
                &types::MAP_TYPE
            }

            fn as_container(&self) -> Option<&dyn Container> {
                Some(self)
            }

            fn clone_as_boxed<'w>(&self) -> Box<dyn Val + 'w>
            where
                Self: 'w,
            {
                Box::new(*self)
            }

            fn as_indexer<'b, 'w>(&'b self) -> Option<&'b (dyn Indexer + 'w)>
            where
                Self: 'w,
            {
                Some(self)
            }
        }
    };
}

map_val!(JsonObject);
map_val!(RequestView);

impl Container for JsonObject<'_> {
    fn contains(&self, key: &dyn Val) -> Result<bool, ExecutionError> {
        Ok(key_text(key).is_some_and(|k| self.0.contains_key(k)))
    }
}

impl<'a> Indexer for JsonObject<'a> {
    fn get<'b, 'w>(&'b self, key: &dyn Val) -> Result<CowVal<'b, 'w>, ExecutionError>
    where
        Self: 'w,
    {
        let map: &'a Map<String, Value> = self.0;
        match key_text(key).and_then(|k| map.get(k)) {
            Some(v) => Ok(CowVal::Owned(json_val(v)?)),
            None => Err(no_such_key(key)),
        }
    }

    fn steal<'w>(self: Box<Self>, key: &dyn Val) -> Result<Box<dyn Val + 'w>, ExecutionError>
    where
        Self: 'w,
    {
        self.get(key).map(CowVal::into_owned)
    }
}

impl<'a> RequestView<'a> {
    fn field(&self, name: &str) -> Option<&'a str> {
        match name {
            "method" => Some(self.method),
            "path" => Some(self.path),
            "host" => Some(self.host),
            _ => None,
        }
    }
}

impl Container for RequestView<'_> {
    fn contains(&self, key: &dyn Val) -> Result<bool, ExecutionError> {
        Ok(key_text(key).is_some_and(|k| {
            k == "headers"
                || (k == "clientCert" && self.client_cert.is_some())
                || (k == "sourceIp" && self.source_ip.is_some())
                || self.field(k).is_some()
        }))
    }
}

impl<'a> Indexer for RequestView<'a> {
    fn get<'b, 'w>(&'b self, key: &dyn Val) -> Result<CowVal<'b, 'w>, ExecutionError>
    where
        Self: 'w,
    {
        let headers: &'a BTreeMap<String, String> = self.headers;
        match key_text(key) {
            Some("headers") => {
                let headers = cel::to_value(headers)
                    .map_err(|e| ExecutionError::function_error("request", e.to_string()))?;
                let headers = Box::<dyn Val>::try_from(headers).map_err(|_| {
                    ExecutionError::function_error("request", "unconvertible headers")
                })?;
                Ok(CowVal::Owned(headers))
            }
            Some("clientCert") => {
                let Some(cert) = self.client_cert else {
                    return Err(no_such_key(key));
                };
                let cert = cel::to_value(cert)
                    .map_err(|e| ExecutionError::function_error("request", e.to_string()))?;
                let cert = Box::<dyn Val>::try_from(cert).map_err(|_| {
                    ExecutionError::function_error("request", "unconvertible clientCert")
                })?;
                Ok(CowVal::Owned(cert))
            }
            Some("sourceIp") => match self.source_ip {
                // As text: expressions compare it, or test it against a range with
                // `startsWith` or a regular expression.
                Some(ip) => Ok(CowVal::Owned(Box::new(CelString::from(ip.to_string())))),
                None => Err(no_such_key(key)),
            },
            Some(k) => match self.field(k) {
                Some(v) => Ok(CowVal::Owned(Box::new(CelString::from(v)))),
                None => Err(no_such_key(key)),
            },
            None => Err(no_such_key(key)),
        }
    }

    fn steal<'w>(self: Box<Self>, key: &dyn Val) -> Result<Box<dyn Val + 'w>, ExecutionError>
    where
        Self: 'w,
    {
        self.get(key).map(CowVal::into_owned)
    }
}
