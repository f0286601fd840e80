//! One line per request in ALB's access-log format (or JSON with the same fields),
//! written by a thread of its own so the request path never waits on stdout.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;

use serde::Serialize;

const QUEUE_LINES: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Alb,
    Json,
}

/// Everything one access-log line says. Field names are ALB's.
#[derive(Clone, Debug, Serialize)]
pub struct AccessRecord {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub elb: String,
    pub client_port: String,
    pub target_port: String,
    pub request_processing_time: f64,
    pub target_processing_time: f64,
    pub response_processing_time: f64,
    pub elb_status_code: u16,
    pub target_status_code: String,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub request: String,
    pub user_agent: String,
    pub ssl_cipher: String,
    pub ssl_protocol: String,
    pub target_group_arn: String,
    pub trace_id: String,
    pub domain_name: String,
    pub chosen_cert_arn: String,
    pub matched_rule_priority: String,
    pub request_creation_time: String,
    pub actions_executed: String,
    pub redirect_url: String,
    pub error_reason: String,
    pub target_port_list: String,
    pub target_status_code_list: String,
    pub classification: String,
    pub classification_reason: String,
}

impl AccessRecord {
    pub fn new(
        kind: &'static str,
        elb: &str,
        client: SocketAddr,
        request_creation_time: String,
    ) -> Self {
        let dash = || "-".to_string();
        Self {
            kind,
            time: dash(),
            elb: elb.to_owned(),
            client_port: client.to_string(),
            target_port: dash(),
            request_processing_time: -1.0,
            target_processing_time: -1.0,
            response_processing_time: -1.0,
            elb_status_code: 0,
            target_status_code: dash(),
            received_bytes: 0,
            sent_bytes: 0,
            request: dash(),
            user_agent: dash(),
            ssl_cipher: dash(),
            ssl_protocol: dash(),
            target_group_arn: dash(),
            trace_id: dash(),
            domain_name: dash(),
            chosen_cert_arn: dash(),
            matched_rule_priority: dash(),
            request_creation_time,
            actions_executed: dash(),
            redirect_url: dash(),
            error_reason: dash(),
            target_port_list: dash(),
            target_status_code_list: dash(),
            classification: dash(),
            classification_reason: dash(),
        }
    }

    pub fn add_action(&mut self, action: &str) {
        if self.actions_executed == "-" {
            self.actions_executed = action.to_owned();
        } else if !self.actions_executed.split(',').any(|a| a == action) {
            self.actions_executed.push(',');
            self.actions_executed.push_str(action);
        }
    }

    /// The ALB line: space separated, quoted fields where ALB quotes them.
    pub fn alb_line(&self) -> String {
        let secs = |v: f64| {
            if v < 0.0 {
                "-1".to_string()
            } else {
                format!("{v:.3}")
            }
        };
        let q = |s: &str| format!("\"{}\"", escape(s));
        [
            self.kind.to_string(),
            self.time.clone(),
            bare(&self.elb),
            bare(&self.client_port),
            bare(&self.target_port),
            secs(self.request_processing_time),
            secs(self.target_processing_time),
            secs(self.response_processing_time),
            self.elb_status_code.to_string(),
            bare(&self.target_status_code),
            self.received_bytes.to_string(),
            self.sent_bytes.to_string(),
            q(&self.request),
            q(&self.user_agent),
            bare(&self.ssl_cipher),
            bare(&self.ssl_protocol),
            bare(&self.target_group_arn),
            q(&self.trace_id),
            q(&self.domain_name),
            q(&self.chosen_cert_arn),
            bare(&self.matched_rule_priority),
            self.request_creation_time.clone(),
            q(&self.actions_executed),
            q(&self.redirect_url),
            q(&self.error_reason),
            q(&self.target_port_list),
            q(&self.target_status_code_list),
            q(&self.classification),
            q(&self.classification_reason),
        ]
        .join(" ")
    }

    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Quoted fields keep parsers in step: `"` and `\` are escaped, control and non-ASCII
/// bytes become `\xHH`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// An unquoted field may not contain a space or be empty.
fn bare(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        escape(s).replace(' ', "\\x20")
    }
}

/// ALB's timestamp: ISO 8601 in UTC with microseconds.
pub fn timestamp(t: jiff::Timestamp) -> String {
    format!(
        "{}Z",
        t.strftime("%Y-%m-%dT%H:%M:%S%.6f")
            .to_string()
            .trim_end_matches('Z')
    )
}

/// How often the writer thread wakes to write what has queued up. Waking it per line
/// costs a futex wake and a context switch per request, which dominated the profile.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    queue: std::sync::Arc<Mutex<Vec<String>>>,
    format: LogFormat,
}

impl AccessLog {
    /// Starts the writer thread over `out`.
    pub fn start(format: LogFormat, out: Box<dyn Write + Send>) -> Self {
        let queue = std::sync::Arc::new(Mutex::new(Vec::with_capacity(1024)));
        let writer_queue = queue.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(writer_queue, out))
            .expect("spawning the access-log thread");
        Self { queue, format }
    }

    /// False when the queue was full and the line was dropped.
    pub fn write(&self, record: &AccessRecord) -> bool {
        let line = match self.format {
            LogFormat::Alb => record.alb_line(),
            LogFormat::Json => record.json_line(),
        };
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= QUEUE_LINES {
            return false;
        }
        queue.push(line);
        true
    }
}

fn write_lines(queue: std::sync::Arc<Mutex<Vec<String>>>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    let mut batch = Vec::with_capacity(1024);
    loop {
        std::thread::sleep(FLUSH_EVERY);
        std::mem::swap(
            &mut batch,
            &mut *queue.lock().unwrap_or_else(|p| p.into_inner()),
        );
        if batch.is_empty() {
            continue;
        }
        for line in batch.drain(..) {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_cannot_break_the_line() {
        let mut r = AccessRecord::new(
            "http",
            "portcullis",
            "127.0.0.1:5000".parse().unwrap(),
            "t".into(),
        );
        r.user_agent = "evil\" \"x\nnext".into();
        let line = r.alb_line();
        assert!(!line.contains('\n'));
        assert!(line.contains(r#""evil\" \"x\x0anext""#), "{line}");
    }

    #[test]
    fn actions_accumulate_once_each() {
        let mut r = AccessRecord::new("http", "p", "127.0.0.1:1".parse().unwrap(), "t".into());
        r.add_action("authenticate");
        r.add_action("forward");
        r.add_action("forward");
        assert_eq!(r.actions_executed, "authenticate,forward");
    }

    #[test]
    fn timestamps_have_microseconds_and_z() {
        let t: jiff::Timestamp = "2026-11-24T10:11:12.123456789Z".parse().unwrap();
        assert_eq!(timestamp(t), "2026-11-24T10:11:12.123456Z");
    }
}
