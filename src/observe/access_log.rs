//! One line per request in ALB's access-log format (or JSON with the same fields),
//! written by a thread of its own so the request path never waits on stdout.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const QUEUE_LINES: usize = 65_536;
/// How often the writer thread wakes to write what has queued up. Waking it per line
/// costs a futex wake and a context switch per request, which dominated the profile.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Alb,
    Json,
}

/// Everything one access-log line says. Field names are ALB's; an empty string is a
/// missing value and prints as `-`, as ALB prints it.
#[derive(Clone, Debug, Default)]
pub struct AccessRecord {
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
        Self {
            kind,
            elb: elb.to_owned(),
            client_port: {
                // `[ipv6]:port` at most 47 bytes; sized once instead of grown.
                let mut text = String::with_capacity(48);
                let _ = write!(text, "{client}");
                text
            },
            // ALB's "could not be dispatched" until forwarding says otherwise.
            request_processing_time: -1.0,
            target_processing_time: -1.0,
            response_processing_time: -1.0,
            request_creation_time,
            ..Self::default()
        }
    }

    pub fn add_action(&mut self, action: &str) {
        if self.actions_executed.is_empty() {
            self.actions_executed = action.to_owned();
        } else if !self.actions_executed.split(',').any(|a| a == action) {
            self.actions_executed.push(',');
            self.actions_executed.push_str(action);
        }
    }

    /// Name, value and whether ALB quotes it, in ALB's order.
    /// ALB's 30 fields (the last, `conn_trace_id`, is `-`), then Portcullis's own
    /// reason. ALB only ever appends fields, so parsers of its format read every line;
    /// `error_reason` holds only ALB's codes.
    fn fields(&self) -> [(&'static str, Value<'_>, bool); 31] {
        use Value::{Int, Secs, Text};
        fn b(v: &str) -> Value<'_> {
            Value::Text(Cow::Borrowed(v))
        }
        [
            ("type", b(self.kind), false),
            ("time", b(&self.time), false),
            ("elb", b(&self.elb), false),
            ("client:port", b(&self.client_port), false),
            ("target:port", b(&self.target_port), false),
            (
                "request_processing_time",
                Secs(self.request_processing_time),
                false,
            ),
            (
                "target_processing_time",
                Secs(self.target_processing_time),
                false,
            ),
            (
                "response_processing_time",
                Secs(self.response_processing_time),
                false,
            ),
            (
                "elb_status_code",
                Int(u64::from(self.elb_status_code)),
                false,
            ),
            ("target_status_code", b(&self.target_status_code), false),
            ("received_bytes", Int(self.received_bytes), false),
            ("sent_bytes", Int(self.sent_bytes), false),
            ("request", Text(redact_query(&self.request)), true),
            ("user_agent", b(&self.user_agent), true),
            ("ssl_cipher", b(&self.ssl_cipher), false),
            ("ssl_protocol", b(&self.ssl_protocol), false),
            ("target_group_arn", b(&self.target_group_arn), false),
            ("trace_id", b(&self.trace_id), true),
            ("domain_name", b(&self.domain_name), true),
            ("chosen_cert_arn", b(&self.chosen_cert_arn), true),
            (
                "matched_rule_priority",
                b(&self.matched_rule_priority),
                false,
            ),
            (
                "request_creation_time",
                b(&self.request_creation_time),
                false,
            ),
            ("actions_executed", b(&self.actions_executed), true),
            ("redirect_url", Text(redact_query(&self.redirect_url)), true),
            ("error_reason", b(alb_reason(&self.error_reason)), true),
            ("target:port_list", b(&self.target_port_list), true),
            (
                "target_status_code_list",
                b(&self.target_status_code_list),
                true,
            ),
            ("classification", b(&self.classification), true),
            (
                "classification_reason",
                b(&self.classification_reason),
                true,
            ),
            ("conn_trace_id", b("-"), true),
            ("portcullis_reason", b(&self.error_reason), true),
        ]
    }

    /// The names of the fields, in the ALB line's order (the JSON line's keys).
    pub fn field_names() -> Vec<&'static str> {
        Self::default()
            .fields()
            .iter()
            .map(|(name, _, _)| *name)
            .collect()
    }

    /// The ALB line: space separated, quoted fields where ALB quotes them. Numbers are
    /// written straight into the line: this runs once per request.
    pub fn alb_line(&self) -> String {
        let mut line = String::with_capacity(512);
        for (i, (_, value, quoted)) in self.fields().iter().enumerate() {
            if i > 0 {
                line.push(' ');
            }
            match value {
                Value::Text(text) => {
                    let text = if text.is_empty() { "-" } else { text };
                    if *quoted {
                        line.push('"');
                        escape_into(&mut line, text, false);
                        line.push('"');
                    } else {
                        escape_into(&mut line, text, true);
                    }
                }
                number => number.write_number(&mut line),
            }
        }
        line
    }

    /// The same fields as one JSON object, `-` for missing values as in the ALB line.
    pub fn json_line(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .fields()
            .into_iter()
            .map(|(name, value, _)| {
                let value = match value {
                    Value::Text(t) if t.is_empty() => "-".to_owned(),
                    Value::Text(t) => t.into_owned(),
                    number => {
                        let mut s = String::new();
                        number.write_number(&mut s);
                        s
                    }
                };
                (name.to_owned(), serde_json::Value::String(value))
            })
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// One field's value as the record holds it.
enum Value<'a> {
    Text(Cow<'a, str>),
    /// Seconds, printed with three decimals; negative is ALB's `-1` (not dispatched).
    Secs(f64),
    Int(u64),
}

impl Value<'_> {
    fn write_number(&self, out: &mut String) {
        match *self {
            Value::Secs(v) if v < 0.0 => out.push_str("-1"),
            Value::Secs(v) => {
                let millis = (v * 1000.0).round() as u64;
                out.push_str(itoa::Buffer::new().format(millis / 1000));
                let fraction = millis % 1000;
                out.push('.');
                for digit in [fraction / 100, fraction / 10 % 10, fraction % 10] {
                    out.push(char::from(b'0' + digit as u8));
                }
            }
            Value::Int(n) => out.push_str(itoa::Buffer::new().format(n)),
            Value::Text(_) => {}
        }
    }
}

/// The `error_reason` codes ALB itself writes (its authentication and Lambda codes);
/// tools built for ALB's logs know no others.
pub const ALB_REASONS: &[&str] = &[
    "AuthInvalidAWSALBAuthNonce",
    "AuthInvalidCookie",
    "AuthInvalidGrantError",
    "AuthInvalidIdToken",
    "AuthInvalidStateParam",
    "AuthInvalidTokenResponse",
    "AuthInvalidUserinfoResponse",
    "AuthMissingAWSALBAuthNonce",
    "AuthMissingCodeParam",
    "AuthMissingHostHeader",
    "AuthMissingStateParam",
    "AuthTokenEpRequestFailed",
    "AuthTokenEpRequestTimeout",
    "AuthUnhandledException",
    "AuthUserinfoEpRequestFailed",
    "AuthUserinfoEpRequestTimeout",
    "AuthUserinfoResponseSizeExceeded",
];

/// `reason` when ALB writes it too, else `-`.
fn alb_reason(reason: &str) -> &str {
    if ALB_REASONS.contains(&reason) {
        reason
    } else {
        "-"
    }
}

/// Query parameters that carry a login's secrets: an authorization code, the state
/// that binds it, an ID token sent as a logout hint.
const SECRET_PARAMS: &[&str] = &["code", "state", "id_token_hint"];

/// The text with the values of secret query parameters replaced by `REDACTED`;
/// everything else byte for byte.
pub fn redact_query(text: &str) -> Cow<'_, str> {
    let Some((before, query)) = text.split_once('?') else {
        return Cow::Borrowed(text);
    };
    // A request line ends in ` HTTP/x`; keep that tail out of the query.
    let (query, tail) = query
        .split_once(' ')
        .map_or((query, None), |(q, t)| (q, Some(t)));
    let secret = |key: &str| {
        let key: String = form_urlencoded::parse(key.as_bytes())
            .next()
            .map(|(k, _)| k.into_owned())
            .unwrap_or_default();
        SECRET_PARAMS.iter().any(|p| key.eq_ignore_ascii_case(p))
    };
    if !query
        .split('&')
        .any(|pair| secret(pair.split('=').next().unwrap_or_default()))
    {
        return Cow::Borrowed(text);
    }
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if secret(k) => format!("{k}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect();
    let mut out = format!("{before}?{}", redacted.join("&"));
    if let Some(t) = tail {
        out.push(' ');
        out.push_str(t);
    }
    Cow::Owned(out)
}

/// Quoted fields keep parsers in step: `"` and `\` are escaped, control and non-ASCII
/// bytes become `\xHH`; an unquoted field escapes spaces too. Runs of bytes that need
/// nothing are copied whole: a request line or user agent is mostly such a run.
fn escape_into(out: &mut String, s: &str, bare: bool) {
    let plain = |b: u8| match b {
        b'"' | b'\\' => false,
        b' ' => !bare,
        _ => (0x21..=0x7e).contains(&b),
    };
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        if plain(b) {
            continue;
        }
        // Runs hold ASCII only, so their ends are character boundaries; the empty
        // "run" between two escaped bytes of one character is not, and adds nothing.
        out.push_str(s.get(run..i).unwrap_or_default());
        run = i + 1;
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b' ' => out.push_str("\\x20"),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push_str(s.get(run..).unwrap_or_default());
}

/// ALB's timestamp: ISO 8601 in UTC with microseconds. Computed by hand (civil from
/// days) because it runs twice per request and `strftime` showed in the profile.
pub fn timestamp(t: jiff::Timestamp) -> String {
    // jiff rounds seconds toward zero; before 1970 the fraction comes out negative.
    let (mut secs, mut micros) = (t.as_second(), t.subsec_microsecond());
    if micros < 0 {
        secs -= 1;
        micros += 1_000_000;
    }
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let mut out = String::with_capacity(32);
    if !(0..=9999).contains(&y) {
        let _ = write!(out, "{y:04}");
    } else {
        push_digits(&mut out, y as u64, 4);
    }
    // Two of these per request: digits pushed by hand cost a tenth of `write!`.
    for (sep, value, width) in [
        ('-', u64::from(m), 2),
        ('-', u64::from(d), 2),
        ('T', (rem / 3600) as u64, 2),
        (':', (rem % 3600 / 60) as u64, 2),
        (':', (rem % 60) as u64, 2),
        ('.', micros as u64, 6),
    ] {
        out.push(sep);
        push_digits(&mut out, value, width);
    }
    out.push('Z');
    out
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut String, value: u64, width: u32) {
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (value / 10u64.pow(place) % 10) as u8));
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    queue: Arc<Mutex<Vec<String>>>,
    format: LogFormat,
}

impl AccessLog {
    /// Starts the writer thread over `out`.
    pub fn start(format: LogFormat, out: Box<dyn Write + Send>) -> Self {
        let queue = Arc::new(Mutex::new(Vec::with_capacity(1024)));
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

fn write_lines(queue: Arc<Mutex<Vec<String>>>, out: Box<dyn Write + Send>) {
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

    fn record() -> AccessRecord {
        AccessRecord::new(
            "http",
            "portcullis",
            "127.0.0.1:5000".parse().unwrap(),
            "t".into(),
        )
    }

    #[test]
    fn login_secrets_never_reach_the_log() {
        let mut r = record();
        r.request =
            "GET http://app.test:80/oauth2/idpresponse?code=c-1&state=s-1&iss=x HTTP/1.1".into();
        r.redirect_url =
            "https://idp.test/logout?client_id=a&id_token_hint=eyJ.x.y&St%61te=s".into();
        let line = r.alb_line();
        for secret in ["c-1", "s-1", "eyJ.x.y", "=s\""] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
        assert!(line.contains("\"GET http://app.test:80/oauth2/idpresponse?code=REDACTED&state=REDACTED&iss=x HTTP/1.1\""), "{line}");
        assert!(
            line.contains("client_id=a&id_token_hint=REDACTED&St%61te=REDACTED"),
            "{line}"
        );
        assert_eq!(redact_query("GET /a?x=1 HTTP/1.1"), "GET /a?x=1 HTTP/1.1");
    }

    #[test]
    fn escaping_copies_plain_runs_and_escapes_every_other_byte() {
        let escaped = |s: &str, bare: bool| {
            let mut out = String::from("<");
            escape_into(&mut out, s, bare);
            out
        };
        let mixed = "GET /a b\"c\\d\u{1}\u{7f}é~ HTTP/1.1";
        assert_eq!(
            escaped(mixed, false),
            r#"<GET /a b\"c\\d\x01\x7f\xc3\xa9~ HTTP/1.1"#
        );
        assert_eq!(
            escaped(mixed, true),
            r#"<GET\x20/a\x20b\"c\\d\x01\x7f\xc3\xa9~\x20HTTP/1.1"#
        );
        assert_eq!(escaped("日本", false), r"<\xe6\x97\xa5\xe6\x9c\xac");
        assert_eq!(escaped("", true), "<");
        assert_eq!(escaped("plain", true), "<plain");
    }

    #[test]
    fn numbers_are_written_as_alb_writes_them() {
        let written = |v: Value<'_>| {
            let mut out = String::new();
            v.write_number(&mut out);
            out
        };
        assert_eq!(written(Value::Secs(0.0)), "0.000");
        assert_eq!(written(Value::Secs(0.0004)), "0.000");
        assert_eq!(written(Value::Secs(0.0015)), "0.002");
        assert_eq!(written(Value::Secs(12.3456)), "12.346");
        assert_eq!(written(Value::Secs(-1.0)), "-1");
        assert_eq!(written(Value::Int(0)), "0");
        assert_eq!(
            written(Value::Int(18_446_744_073_709_551_615)),
            "18446744073709551615"
        );
    }

    #[test]
    fn quoted_fields_cannot_break_the_line() {
        let mut r = record();
        r.user_agent = "evil\" \"x\nnext".into();
        r.target_port = "a b".into();
        let line = r.alb_line();
        assert!(!line.contains('\n'));
        assert!(line.contains(r#""evil\" \"x\x0anext""#), "{line}");
        assert!(
            line.contains(r"a\x20b"),
            "a bare field never splits: {line}"
        );
    }

    #[test]
    fn missing_values_print_as_dashes_and_times_as_minus_one() {
        let r = record();
        let line = r.alb_line();
        assert!(
            line.starts_with("http - portcullis 127.0.0.1:5000 - -1 -1 -1 0 - 0 0 \"-\" \"-\" - -"),
            "{line}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.json_line()).unwrap();
        assert_eq!(json["error_reason"], "-");
        assert_eq!(json["request_processing_time"], "-1");
        assert_eq!(json.as_object().unwrap().len(), 31);
    }

    #[test]
    fn error_reason_holds_albs_codes_and_the_last_field_ours() {
        let mut r = record();
        r.error_reason = "NoMatchingRoute".into();
        let json: serde_json::Value = serde_json::from_str(&r.json_line()).unwrap();
        assert_eq!(
            (
                json["error_reason"].as_str(),
                json["portcullis_reason"].as_str()
            ),
            (Some("-"), Some("NoMatchingRoute"))
        );
        r.error_reason = "AuthInvalidIdToken".into();
        let line = r.alb_line();
        assert!(line.ends_with("\"AuthInvalidIdToken\""), "{line}");
        assert_eq!(line.matches("\"AuthInvalidIdToken\"").count(), 2, "{line}");
    }

    #[test]
    fn actions_accumulate_once_each() {
        let mut r = record();
        r.add_action("authenticate");
        r.add_action("forward");
        r.add_action("forward");
        assert_eq!(r.actions_executed, "authenticate,forward");
    }

    #[test]
    fn timestamps_have_microseconds_and_z() {
        for (input, want) in [
            (
                "2026-11-24T10:11:12.123456789Z",
                "2026-11-24T10:11:12.123456Z",
            ),
            ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00.000000Z"),
            ("2000-02-29T23:59:59.000001Z", "2000-02-29T23:59:59.000001Z"),
            ("2100-03-01T00:00:00Z", "2100-03-01T00:00:00.000000Z"),
            ("1969-12-31T23:59:59.5Z", "1969-12-31T23:59:59.500000Z"),
            ("0009-09-09T09:09:09.090909Z", "0009-09-09T09:09:09.090909Z"),
            ("9999-12-30T21:59:59.999999Z", "9999-12-30T21:59:59.999999Z"),
            ("-000001-12-31T00:00:00Z", "-001-12-31T00:00:00.000000Z"),
        ] {
            assert_eq!(timestamp(input.parse().unwrap()), want);
        }
    }
}
