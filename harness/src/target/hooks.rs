//! The ARM hooks every target installs: drift recording and progress lines.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::client::ArmHooks;
use crate::drift::Recorder;

/// A sink for progress lines, such as one that prints to stderr.
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

/// Records ARM answers and reports polls. The live target wraps it with its own rules.
#[derive(Clone, Default)]
pub struct TargetHooks {
    recorder: Option<Recorder>,
    progress: Option<Progress>,
    /// Text removed from URLs before recording, so runs with different run ids compare.
    strip: Option<String>,
}

impl TargetHooks {
    pub fn new(recorder: Option<Recorder>, progress: Option<Progress>) -> Self {
        Self {
            recorder,
            progress,
            strip: None,
        }
    }

    /// Removes `text` (a run-id suffix) from every URL before recording it.
    pub fn stripping(mut self, text: String) -> Self {
        self.strip = Some(text);
        self
    }
}

impl ArmHooks for TargetHooks {
    fn after_response(&self, method: &Method, url: &str, status: u16, body: &Value) {
        if let Some(recorder) = &self.recorder {
            let url = match &self.strip {
                Some(text) => url.replace(text.as_str(), ""),
                None => url.to_owned(),
            };
            recorder.record(method.as_str(), &url, status, body);
        }
    }

    fn on_poll(&self, url: &str, poll: u32, elapsed: Duration) {
        if let Some(progress) = &self.progress {
            let path = url.split('?').next().unwrap_or(url);
            progress(&format!(
                "    waiting for {path}: poll {poll}, {} s elapsed",
                elapsed.as_secs()
            ));
        }
    }
}
