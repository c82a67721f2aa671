//! ARM's subscription request limits: the remaining-budget headers on every response, and a
//! 429 `SubscriptionRequestsThrottled` that a test mounts above the model responder.
//!
//! ARM counts reads (GET, HEAD), writes (PUT, PATCH, POST) and deletes per subscription and
//! reports what is left in `x-ms-ratelimit-remaining-subscription-{reads|writes|deletes}`.
//! When a budget is spent it answers 429 with `Retry-After`, and azure-core's retry policy
//! waits that many seconds before it retries.

use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use super::errors::SUBSCRIPTION_REQUESTS_THROTTLED;
use super::response::JSON_CONTENT_TYPE;
use crate::http::bearer_token;
use crate::jwt::DecodedJwt;

/// Priority of [`throttle_mock`]: above the model responder and below wiremock's default (5),
/// so a test's own mocks still win.
const THROTTLE_PRIORITY: u8 = 10;

/// The request budgets ARM keeps per subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Read,
    Write,
    Delete,
}

impl RequestKind {
    /// Classifies an HTTP method as ARM's throttling does.
    pub fn of_method(method: &str) -> Self {
        match method {
            "GET" | "HEAD" => Self::Read,
            "DELETE" => Self::Delete,
            _ => Self::Write,
        }
    }

    /// The word ARM uses in the throttling message: `read`, `write` or `delete`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
        }
    }

    /// `x-ms-ratelimit-remaining-subscription-reads`, `-writes` or `-deletes`.
    pub fn remaining_header(self) -> &'static str {
        match self {
            Self::Read => "x-ms-ratelimit-remaining-subscription-reads",
            Self::Write => "x-ms-ratelimit-remaining-subscription-writes",
            Self::Delete => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }

    /// Budget left that the model responder reports on every subscription request.
    /// NOTE: ARM's numbers vary by region and by its token-bucket state; these are the
    /// classic hourly limits (12000 reads, 1200 writes, 15000 deletes) minus one.
    pub fn remaining_budget(self) -> u32 {
        match self {
            Self::Read => 11999,
            Self::Write => 1199,
            Self::Delete => 14999,
        }
    }

    fn methods(self) -> &'static [&'static str] {
        match self {
            Self::Read => &["GET", "HEAD"],
            Self::Write => &["PUT", "PATCH", "POST"],
            Self::Delete => &["DELETE"],
        }
    }
}

/// Responds 429 `SubscriptionRequestsThrottled` with ARM's headers.
#[derive(Clone, Debug)]
pub struct ThrottleResponder {
    subscription: String,
    kind: RequestKind,
    retry_after_seconds: u32,
}

impl Respond for ThrottleResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        // The actor is the caller's object id; the token is not verified here because the
        // model responder never sees this request.
        let actor = bearer_token(request)
            .and_then(|token| DecodedJwt::decode(token).ok())
            .and_then(|jwt| jwt.claim_str("oid").map(str::to_owned))
            .unwrap_or_default();
        let message = format!(
            "Number of '{}' requests for subscription '{}' actor '{actor}' exceeded. Please try \
             again after '{}' seconds after additional tokens are available. Refer to \
             https://aka.ms/arm-throttling",
            self.kind.word(),
            self.subscription,
            self.retry_after_seconds
        );
        let body = json!({"error": {"code": SUBSCRIPTION_REQUESTS_THROTTLED, "message": message}});
        ResponseTemplate::new(429)
            .set_body_raw(body.to_string().into_bytes(), JSON_CONTENT_TYPE)
            .insert_header("retry-after", self.retry_after_seconds.to_string().as_str())
            .insert_header(self.kind.remaining_header(), "0")
    }
}

/// Builds a mock that throttles every `kind` request to `subscription` with 429
/// `SubscriptionRequestsThrottled` and `Retry-After: retry_after_seconds`.
///
/// Mount it on the fake ARM's server (`Fakes::arm.server`); chain `up_to_n_times(n)` to
/// throttle only the next `n` requests. The message follows ARM's wording; its tail after
/// "seconds" is remembered rather than captured.
pub fn throttle_mock(subscription: &str, kind: RequestKind, retry_after_seconds: u32) -> Mock {
    // ARM matches path segments without regard to case, and so does this pattern.
    let pattern = format!("(?i)^/subscriptions/{}(/.*)?$", regex_escape(subscription));
    let mut mock = Mock::given(path_regex(pattern));
    mock = match kind.methods() {
        [only] => mock.and(method(*only)),
        methods => {
            let methods: Vec<String> = methods.iter().map(|m| (*m).to_owned()).collect();
            mock.and(move |request: &Request| methods.iter().any(|m| request.method.as_str() == m))
        }
    };
    mock.respond_with(ThrottleResponder {
        subscription: subscription.to_owned(),
        kind,
        retry_after_seconds,
    })
    .with_priority(THROTTLE_PRIORITY)
    .named(format!("throttle {} requests", kind.word()))
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_arm_budgets() {
        assert_eq!(RequestKind::of_method("HEAD"), RequestKind::Read);
        assert_eq!(RequestKind::of_method("POST"), RequestKind::Write);
        assert_eq!(RequestKind::of_method("DELETE"), RequestKind::Delete);
    }

    #[test]
    fn subscription_ids_are_escaped() {
        assert_eq!(regex_escape("a-b.c"), r"a\-b\.c");
    }
}
