//! Successful ARM responses.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use wiremock::ResponseTemplate;

/// Content type of every ARM JSON body.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// Seconds a client waits between polls of a long-running operation. Without the header
/// azure-core waits 30 s, and it treats `0` as absent.
pub const RETRY_AFTER_SECONDS: &str = "1";

/// A status, optional JSON body and headers.
#[derive(Debug)]
pub struct ArmResponse {
    pub status: u16,
    pub body: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
}

impl ArmResponse {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    /// `{"value":[...]}`, the shape of every ARM list.
    pub fn list(items: Vec<Value>) -> Self {
        Self::json(200, serde_json::json!({ "value": items }))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn to_template(&self) -> ResponseTemplate {
        let mut template = ResponseTemplate::new(self.status);
        if let Some(body) = &self.body {
            template = template.set_body_raw(body.to_string().into_bytes(), JSON_CONTENT_TYPE);
        }
        for (name, value) in &self.headers {
            template = template.insert_header(*name, value.as_str());
        }
        template
    }
}

/// Formats a time in the RFC 3339 form ARM uses in `createdOn`, `startTime` and similar fields.
pub fn timestamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}
