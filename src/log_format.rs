//! How a log line reads, as text or as JSON: the layouts of tracing-subscriber's full format
//! without colours (time, level, spans, target, message, fields) and of its JSON format with the
//! event's fields at the top level, written straight into the line. Formatting a request's line
//! through those formats' pieces (a styled wrapper around each name and `=`, a calendar date
//! worked out for every line, a string made for every JSON value) cost a small hit a tenth of its
//! time (BENCHMARKS.md); here the date is made once a second per thread and names and values are
//! written as they are. JSON lines of events inside spans (debug level) and of libraries logging
//! through the `log` crate are left to tracing-subscriber's own JSON format.
//!
//! Control characters in a text message or value (a newline in an error from the network, an
//! escape sequence in a name a client sent) are written escaped, so that one event is always
//! one line and nothing in it can steer a terminal that shows the log.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The text line format for logs that are not a terminal's.
pub struct PlainText;

impl<S, N> FormatEvent<S, N> for PlainText
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events from libraries that log through the `log` crate carry their real target in
        // fields; this is the metadata they stand for.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write_time(&mut writer, SystemTime::now())?;
        writer.write_str(match *meta.level() {
            Level::ERROR => " ERROR ",
            Level::WARN => "  WARN ",
            Level::INFO => "  INFO ",
            Level::DEBUG => " DEBUG ",
            Level::TRACE => " TRACE ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut any = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(writer, "{{{fields}}}")?;
                    }
                }
                writer.write_char(':')?;
                any = true;
            }
            if any {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// Writes an event's fields: the message as it is, every other field as ` name=value` (text
/// values quoted, as `Debug` shows them), each separated by a space.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// Starts a field: a space before all but the first; `false` for fields not shown.
    fn begin(&mut self, field: &Field) -> bool {
        let name = field.name();
        // The `log` crate's metadata, already in the line's target.
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        if !std::mem::take(&mut self.first) {
            self.result = self.writer.write_char(' ');
        }
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }
}

impl Visit for Fields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.begin(field) {
            self.result = write!(Escaped(&mut *self.writer), "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.begin(field) {
            return;
        }
        self.result = if field.name() == "message" {
            Escaped(&mut *self.writer).write_str(value)
        } else {
            // Quoted and escaped, as `Debug` shows text.
            write!(self.writer, "{value:?}")
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.begin(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.begin(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.begin(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }
}

/// The JSON line format: one object per event, its fields at the top level.
pub struct FlatJson {
    /// For the events this format leaves to tracing-subscriber's.
    theirs: Format<Json>,
}

impl Default for FlatJson {
    fn default() -> FlatJson {
        FlatJson {
            theirs: tracing_subscriber::fmt::format().json().flatten_event(true),
        }
    }
}

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let in_span = event.parent().is_some() || ctx.lookup_current().is_some();
        if in_span || event.normalized_metadata().is_some() {
            return self.theirs.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_time(&mut writer, SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = JsonValues {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        json_string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes an event's fields as JSON members, each after a comma: numbers and flags as JSON
/// numbers and booleans, everything else as a string.
struct JsonValues<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonValues<'_, '_> {
    /// Writes the member `field` with the value `value` writes, unless one failed before.
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self
                .writer
                .write_char(',')
                .and_then(|()| json_string(self.writer, field.name()))
                .and_then(|()| self.writer.write_char(':'))
                .and_then(|()| value(self.writer));
        }
    }
}

impl Visit for JsonValues<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |writer| {
            writer.write_char('"')?;
            write!(JsonEscaped(writer), "{value:?}")?;
            writer.write_char('"')
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |writer| json_string(writer, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |writer| {
            writer.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |writer| {
            writer.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json writes them: the shortest form that reads back the same; `null` for
        // what JSON has no number for.
        self.member(field, |writer| match serde_json::Number::from_f64(value) {
            Some(number) => write!(writer, "{number}"),
            None => writer.write_str("null"),
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |writer| {
            writer.write_str(if value { "true" } else { "false" })
        });
    }
}

/// Writes `text` as a JSON string.
fn json_string(writer: &mut impl Write, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    JsonEscaped(&mut *writer).write_str(text)?;
    writer.write_char('"')
}

/// A writer for the inside of a JSON string: quotes, backslashes and control characters
/// escaped as RFC 8259 (and serde_json) write them.
struct JsonEscaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut written = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[written..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            written = at + 1;
        }
        self.0.write_str(&text[written..])
    }
}

/// A writer that writes control characters as escapes (`\n` as `\x0a`).
struct Escaped<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Control characters are below 0x20, 0x7f, or 0x80-0x9f, which UTF-8 starts with 0xc2:
        // a byte scan finds most text free of them without decoding it.
        if !text.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) {
            return self.0.write_str(text);
        }
        let mut rest = text;
        while let Some(at) = rest.find(char::is_control) {
            self.0.write_str(&rest[..at])?;
            let control = rest[at..].chars().next().unwrap_or_default();
            write!(self.0, "\\x{:02x}", u32::from(control))?;
            rest = &rest[at + control.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

thread_local! {
    /// The second this thread last wrote a time for, and its text up to the seconds.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Writes `now` as `2026-12-04T14:00:55.526054Z` (UTC, microseconds).
fn write_time(writer: &mut impl Write, now: SystemTime) -> fmt::Result {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            let text = &mut second.1;
            text.clear();
            let at = i64::try_from(secs)
                .ok()
                .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            write!(
                text,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            )?;
            second.0 = secs;
        }
        writer.write_str(&second.1)
    })?;
    let micros = since_epoch.subsec_micros();
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros);
    writer.write_char('.')?;
    writer.write_str(&"000000"[digits.len()..])?;
    writer.write_str(digits)?;
    writer.write_char('Z')
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// Lines written by a test subscriber.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Lines {
        fn text(&self) -> String {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8(bytes).expect("UTF-8")
        }
    }

    impl io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if let Ok(mut lines) = self.0.lock() {
                lines.extend_from_slice(bytes);
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `log` writes, formatted by this format when `plain`, else by tracing-subscriber's
    /// full format without colours; the time left out.
    fn formatted(plain: bool, log: impl FnOnce()) -> String {
        let lines = Lines::default();
        let writer = lines.clone();
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone());
        if plain {
            tracing::subscriber::with_default(builder.event_format(PlainText).finish(), log);
        } else {
            tracing::subscriber::with_default(builder.finish(), log);
        }
        lines
            .text()
            .lines()
            .map(|line| line.split_once(' ').map_or("", |(_, rest)| rest).to_owned() + "\n")
            .collect()
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Shape {
        size: u32,
    }

    fn events() {
        let peer = "127.0.0.1:40538";
        tracing::info!(
            peer = Some(tracing::field::display(peer)),
            method = %"GET",
            url = %"https://app.test/main.dart.js?v=2",
            status = 200u16,
            cache = %"asset-proxy; fwd=miss; stored",
            bytes = 4_194_304u64,
            ms = 35u64,
            complete = true,
            "request"
        );
        let client = tracing::info_span!("client", peer = %peer);
        let _client = client.enter();
        let tunnel = tracing::debug_span!("tunnel", origin = "https://app.test:443");
        let _tunnel = tunnel.enter();
        tracing::warn!(
            error = %"connection refused",
            signed = -7i64,
            name = "quoted \"text\"",
            r#type = "raw",
            shape = ?Shape { size: 3 },
            "upstream request failed"
        );
        tracing::error!("no fields");
        tracing::trace!(nothing = 0u64, "tracing");
        tracing::debug!(float = 0.5f64, "a float {}", 1);
    }

    #[test]
    fn lines_read_as_the_full_format_without_colours_does() {
        let plain = formatted(true, events);
        assert_eq!(plain, formatted(false, events));
        assert_eq!(plain.lines().count(), 5, "{plain}");
        assert!(plain.starts_with(
            " INFO asset_proxy::log_format::tests: request peer=127.0.0.1:40538 method=GET \
             url=https://app.test/main.dart.js?v=2 status=200 \
             cache=asset-proxy; fwd=miss; stored bytes=4194304 ms=35 complete=true\n"
        ));
    }

    /// What `log` writes as JSON lines, formatted by this format when `ours`, else by
    /// tracing-subscriber's JSON format with the event's fields at the top level; the time
    /// left out.
    fn formatted_json(ours: bool, log: impl FnOnce()) -> String {
        let lines = Lines::default();
        let writer = lines.clone();
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(move || writer.clone())
            .json()
            .flatten_event(true);
        if ours {
            let subscriber = builder.event_format(FlatJson::default()).finish();
            tracing::subscriber::with_default(subscriber, log);
        } else {
            tracing::subscriber::with_default(builder.finish(), log);
        }
        let text = lines.text();
        let time = r#"{"timestamp":"2026-12-04T13:40:55.526054Z""#.len();
        text.lines()
            .map(|line| {
                assert!(line.starts_with(r#"{"timestamp":""#), "{line}");
                line.get(time..).unwrap_or("").to_owned() + "\n"
            })
            .collect()
    }

    fn log_crate_event() {
        let args = format_args!("handshake done");
        let record = log::Record::builder()
            .args(args)
            .level(log::Level::Warn)
            .target("rustls::server")
            .module_path_static(Some("rustls::server"))
            .file_static(Some("server.rs"))
            .line(Some(7))
            .build();
        tracing_log::format_trace(&record).expect("dispatched");
    }

    #[test]
    fn json_lines_read_as_the_json_format_with_flattened_fields_does() {
        let all = || {
            tracing::info!(
                text = "quote \" backslash \\ newline \n tab \t bell \x07 del \x7f é 😀",
                shown = %"ctrl \x01\x1f and \u{9b}",
                float = 0.1f64 + 0.2f64,
                big = 1e21f64,
                nothing = f64::NAN,
                "message with \"quotes\" and\nlines"
            );
            events();
            log_crate_event();
        };
        let ours = formatted_json(true, all);
        assert_eq!(ours, formatted_json(false, all));
        assert_eq!(ours.lines().count(), 7, "{ours}");
        for line in ours.lines() {
            let line = format!("{{\"timestamp\":\"\"{line}");
            serde_json::from_str::<serde_json::Value>(&line).expect("JSON");
        }
        assert!(ours.contains(
            r#","level":"INFO","message":"request","peer":"127.0.0.1:40538","method":"GET","#
        ));
    }

    #[test]
    fn events_from_the_log_crate_show_their_own_target_and_no_log_fields() {
        let plain = formatted(true, log_crate_event);
        assert_eq!(plain, " WARN rustls::server: handshake done\n");
    }

    #[test]
    fn control_characters_in_messages_and_values_are_escaped() {
        let plain = formatted(true, || {
            tracing::warn!(
                error = %"line one\nINFO forged: line two",
                shown = ?"tab\there",
                price = %"£3 \u{9b}31m",
                "bell\x07 and \x1b[31mred\r"
            );
        });
        assert_eq!(
            plain,
            " WARN asset_proxy::log_format::tests: bell\\x07 and \\x1b[31mred\\x0d \
             error=line one\\x0aINFO forged: line two shown=\"tab\\there\" price=£3 \\x9b31m\n"
        );
    }

    #[test]
    fn the_time_reads_as_utc_with_microseconds() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_825_599, 999_999, "2000-02-29T11:59:59.999999Z"),
            (1_796_391_655, 526_054, "2026-12-04T13:40:55.526054Z"),
            (4_102_444_800, 7, "2100-01-01T00:00:00.000007Z"),
        ];
        for (secs, micros, expected) in cases {
            // Twice: the second time from the text kept for that second.
            for _ in 0..2 {
                let mut text = String::new();
                let at = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
                write_time(&mut text, at).expect("written");
                assert_eq!(text, expected);
            }
        }
        // And now, to the second, as tracing-subscriber's own clock shows it (again if the
        // second turned between the two).
        use tracing_subscriber::fmt::time::FormatTime;
        let same_second = (0..3).any(|_| {
            let (mut ours, mut theirs) = (String::new(), String::new());
            write_time(&mut ours, SystemTime::now()).expect("written");
            let theirs_written = tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut theirs))
                .is_ok();
            theirs_written && ours.len() == theirs.len() && ours[..19] == theirs[..19]
        });
        assert!(same_second);
    }
}
