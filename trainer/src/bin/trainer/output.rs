//! What the trainer prints: result lines as text or JSON objects (`--log-format`), and a spinner
//! for people at a terminal.

use std::io::IsTerminal;

/// Prints progress/result lines as text or JSON objects.
pub struct Log {
    pub json: bool,
}

/// A spinner on stderr while a step runs, only for people at a terminal (text logs).
pub struct Step(Option<indicatif::ProgressBar>);

impl Step {
    pub fn start(log: &Log, what: &str) -> Self {
        if log.json || !std::io::stderr().is_terminal() {
            return Step(None);
        }
        let bar = indicatif::ProgressBar::new_spinner().with_message(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Step(Some(bar))
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

impl Log {
    pub fn event(&self, event: &str, text: &str, fields: serde_json::Value) {
        if self.json {
            let mut obj = serde_json::json!({"event": event, "message": text});
            if let (Some(o), serde_json::Value::Object(f)) = (obj.as_object_mut(), fields) {
                o.extend(f);
            }
            println!("{obj}");
        } else {
            println!("{text}");
        }
    }
}
