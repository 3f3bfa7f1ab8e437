//! Container logs as the kubelet serves them: CRI-format log files (`<RFC3339Nano> stdout|stderr F|P
//! <text>`, one line per write, `P` marking a partial line continued by the next entry of the same stream)
//! read with `kubectl logs`' options — `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps`, `limitBytes`
//! and `follow`.
//!
//! The pure part is [`LogOptions::from_query`], [`parse_line`] and the [`Assembler`] that joins partial
//! lines; [`read_logs`] applies the options to the files of one container (the rotated ones first, numbered
//! or timestamped, oldest first), and [`follow`] keeps streaming what the runtime appends until the
//! container stops.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};

/// Why a log request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A query parameter is malformed or out of range (the message is kube-apiserver's).
    #[error("{0}")]
    InvalidOption(String),
    /// A log file could not be opened or read.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// What `GET /containerLogs/…` was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    /// Only the last N lines (of what the files hold when the request arrives).
    pub tail_lines: Option<u64>,
    /// Only lines written at or after this time (`sinceSeconds` is turned into a time on arrival).
    pub since: Option<DateTime<Utc>>,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

fn parse_bool(name: &str, v: &str) -> Result<bool, LogError> {
    match v {
        "" | "true" | "1" | "True" | "TRUE" | "t" | "T" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" | "F" => Ok(false),
        _ => Err(LogError::InvalidOption(format!(
            "{name}: invalid value {v:?}: expected a boolean"
        ))),
    }
}

fn parse_int(name: &str, v: &str) -> Result<i64, LogError> {
    v.parse::<i64>()
        .map_err(|_| LogError::InvalidOption(format!("{name}: invalid value {v:?}: expected an integer")))
}

impl LogOptions {
    /// Parses the query of a log request the way kube-apiserver validates `PodLogOptions`; `now` turns
    /// `sinceSeconds` into a point in time.
    pub fn from_query(query: &str, now: DateTime<Utc>) -> Result<LogOptions, LogError> {
        let mut opts = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "follow" => opts.follow = parse_bool("follow", &v)?,
                "previous" => opts.previous = parse_bool("previous", &v)?,
                "timestamps" => opts.timestamps = parse_bool("timestamps", &v)?,
                "tailLines" => {
                    let n = parse_int("tailLines", &v)?;
                    if n < 0 {
                        return Err(LogError::InvalidOption(format!(
                            "tailLines: Invalid value: {n}: must be greater than or equal to 0"
                        )));
                    }
                    opts.tail_lines = Some(n as u64);
                }
                "limitBytes" => {
                    let n = parse_int("limitBytes", &v)?;
                    if n < 1 {
                        return Err(LogError::InvalidOption(format!(
                            "limitBytes: Invalid value: {n}: must be greater than 0"
                        )));
                    }
                    opts.limit_bytes = Some(n as u64);
                }
                "sinceSeconds" => {
                    let n = parse_int("sinceSeconds", &v)?;
                    if n < 1 {
                        return Err(LogError::InvalidOption(format!(
                            "sinceSeconds: Invalid value: {n}: must be greater than 0"
                        )));
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" => {
                    let t = DateTime::parse_from_rfc3339(&v).map_err(|_| {
                        LogError::InvalidOption(format!(
                            "sinceTime: invalid value {v:?}: expected an RFC 3339 time"
                        ))
                    })?;
                    since_time = Some(t.with_timezone(&Utc));
                }
                _ => {}
            }
        }
        opts.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err(LogError::InvalidOption(
                    "at most one of `sinceTime` or `sinceSeconds` may be specified".to_string(),
                ));
            }
            (Some(s), None) => Some(now - chrono::Duration::seconds(s)),
            (None, t) => t,
        };
        Ok(opts)
    }
}

/// Which output a log entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of a CRI log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time: DateTime<Utc>,
    pub stream: Stream,
    /// `P`: the text continues in the next entry of the same stream.
    pub partial: bool,
    pub text: &'a [u8],
}

/// Parses `<RFC3339Nano> stdout|stderr F|P <text>` (without the trailing newline); None for anything else.
pub fn parse_line(line: &[u8]) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let time = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"F" => false,
        b"P" => true,
        _ => return None,
    };
    Some(Entry {
        time,
        stream,
        partial,
        text: parts.next().unwrap_or_default(),
    })
}

/// A complete output line: partial entries joined, stamped with the time of its first part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub time: DateTime<Utc>,
    pub stream: Stream,
    /// The text including its final newline.
    pub text: Vec<u8>,
}

impl LogLine {
    /// The bytes `kubectl logs` prints for this line.
    pub fn render(&self, timestamps: bool) -> Vec<u8> {
        if !timestamps {
            return self.text.clone();
        }
        let mut out = self.time.to_rfc3339_opts(SecondsFormat::Nanos, true).into_bytes();
        out.push(b' ');
        out.extend_from_slice(&self.text);
        out
    }
}

/// Joins partial (`P`) entries into whole lines, per stream (stdout and stderr interleave freely).
#[derive(Debug, Default)]
pub struct Assembler {
    pending: [Option<LogLine>; 2],
}

impl Assembler {
    /// Feeds one raw file line; returns the completed output line, if this entry completed one.
    pub fn push(&mut self, raw: &[u8]) -> Option<LogLine> {
        let entry = parse_line(raw)?;
        let slot = &mut self.pending[entry.stream as usize];
        let line = slot.get_or_insert_with(|| LogLine {
            time: entry.time,
            stream: entry.stream,
            text: Vec::new(),
        });
        line.text.extend_from_slice(entry.text);
        if entry.partial {
            return None;
        }
        let mut line = slot.take()?;
        line.text.push(b'\n');
        Some(line)
    }
}

/// The files holding one container attempt's log, oldest first, then `<path>` itself. Rotated files are
/// `<path>.<UTC timestamp>` (the runtime's shim, as the kubelet names them: sorted, oldest first) or
/// `<path>.N` (logrotate's: the highest N is the oldest).
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut stamped: Vec<(String, PathBuf)> = Vec::new();
    let mut numbered: Vec<(u32, PathBuf)> = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for e in entries.flatten() {
            let file_name = e.file_name();
            let Some(suffix) = file_name
                .to_str()
                .and_then(|f| f.strip_prefix(name))
                .and_then(|rest| rest.strip_prefix('.'))
                .filter(|s| !s.is_empty() && !s.ends_with(".gz") && !s.ends_with(".tmp"))
            else {
                continue;
            };
            match suffix.parse::<u32>() {
                Ok(n) => numbered.push((n, e.path())),
                Err(_) => stamped.push((suffix.to_string(), e.path())),
            }
        }
    }
    stamped.sort();
    numbered.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = stamped.into_iter().map(|(_, p)| p).collect();
    files.extend(numbered.into_iter().map(|(_, p)| p));
    files.push(path.to_path_buf());
    files
}

/// Applies `limitBytes` to what is written: tracks how much is left.
#[derive(Debug)]
pub struct Limit(Option<u64>);

impl Limit {
    pub fn new(limit: Option<u64>) -> Limit {
        Limit(limit)
    }

    /// Cuts `bytes` to what the limit still allows.
    pub fn take(&mut self, mut bytes: Vec<u8>) -> Vec<u8> {
        if let Some(left) = &mut self.0 {
            bytes.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
            *left -= bytes.len() as u64;
        }
        bytes
    }

    pub fn exhausted(&self) -> bool {
        self.0 == Some(0)
    }
}

/// Where reading the current file stopped, so [`follow`] continues from there.
#[derive(Debug)]
pub struct Position {
    file: Option<File>,
    path: PathBuf,
    /// Bytes after the last newline read so far (a line the runtime is still writing).
    rest: Vec<u8>,
    assembler: Assembler,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Splits complete lines off `buf` (keeping an unterminated tail in it) and assembles them.
fn drain_lines(buf: &mut Vec<u8>, assembler: &mut Assembler, out: &mut impl FnMut(LogLine)) {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
        if let Some(line) = assembler.push(&buf[start..start + nl]) {
            out(line);
        }
        start += nl + 1;
    }
    buf.drain(..start);
}

/// Reads everything the container's log files hold now and applies `tail_lines`, `since`,
/// `timestamps` and `limit`; returns the output and where the current file ended.
pub fn read_logs(path: &Path, opts: &LogOptions, limit: &mut Limit) -> Result<(Vec<u8>, Position), LogError> {
    let files = log_files(path);
    let mut assembler = Assembler::default();
    // Only the last `tail` lines are kept while reading, so a long log costs no more memory than it shows.
    let keep = opts.tail_lines.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let mut lines: VecDeque<LogLine> = VecDeque::new();
    let mut push = |line: LogLine| {
        if keep == Some(0) {
            return;
        }
        if keep.is_some_and(|k| lines.len() >= k) {
            lines.pop_front();
        }
        lines.push_back(line);
    };
    let mut position = Position {
        file: None,
        path: path.to_path_buf(),
        rest: Vec::new(),
        assembler: Assembler::default(),
    };
    let last = files.len() - 1;
    for (i, file_path) in files.iter().enumerate() {
        let mut file = match File::open(file_path) {
            Ok(f) => f,
            // Rotation may move a file between listing and opening; the current one may not exist yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(file_path)(e)),
        };
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(io_err(file_path))?;
        if i < last && !buf.ends_with(b"\n") && !buf.is_empty() {
            buf.push(b'\n');
        }
        drain_lines(&mut buf, &mut assembler, &mut push);
        if i == last {
            position.file = Some(file);
            position.rest = buf;
        }
    }
    position.assembler = assembler;
    let mut out = Vec::new();
    for line in lines {
        if opts.since.is_some_and(|since| line.time < since) {
            continue;
        }
        out.extend(limit.take(line.render(opts.timestamps)));
        if limit.exhausted() {
            break;
        }
    }
    Ok((out, position))
}

/// How often a followed log looks for new data, and how often it asks whether the container still runs.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
const RUNNING_CHECK_EVERY: u32 = 5;

/// Streams what the runtime appends after `position` into `sink` until the container stops (`running`
/// returns false: then the rest is drained), the limit is reached, or the receiver goes away. A file
/// replaced by rotation is finished and the new one followed from its start.
pub async fn follow(
    mut position: Position,
    opts: LogOptions,
    mut limit: Limit,
    sink: tokio::sync::mpsc::Sender<Bytes>,
    running: impl Fn() -> bool + Send,
) {
    let mut ticks = 0u32;
    let mut stopping = false;
    loop {
        if limit.exhausted() || sink.is_closed() {
            return;
        }
        // Rotation: the path names another file now (or a file appeared). Checked before the last read of
        // our handle, so what was written before the switch is not lost.
        let replaced = match (std::fs::metadata(&position.path), &position.file) {
            (Ok(now), Some(file)) => file.metadata().map(|m| m.ino() != now.ino()).unwrap_or(true),
            (Ok(_), None) => true,
            (Err(_), _) => false,
        };
        let mut chunk = Vec::new();
        let mut emit = |line: LogLine| {
            if opts.since.is_none_or(|since| line.time >= since) && !limit.exhausted() {
                chunk.extend(limit.take(line.render(opts.timestamps)));
            }
        };
        if let Some(file) = &mut position.file {
            let mut buf = std::mem::take(&mut position.rest);
            if file.read_to_end(&mut buf).is_err() {
                return;
            }
            drain_lines(&mut buf, &mut position.assembler, &mut emit);
            position.rest = buf;
        }
        if !chunk.is_empty() && sink.send(Bytes::from(chunk)).await.is_err() {
            return;
        }
        if replaced && let Ok(file) = File::open(&position.path) {
            position.file = Some(file);
            position.rest.clear();
            continue;
        }
        if stopping {
            return;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
        ticks += 1;
        if ticks.is_multiple_of(RUNNING_CHECK_EVERY) && !running() {
            // One more pass drains what the container wrote just before it stopped.
            stopping = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_cri_lines() {
        let e = parse_line(b"2024-01-02T03:04:05.123456789Z stdout F hello world").unwrap();
        assert_eq!(e.time, t("2024-01-02T03:04:05.123456789Z"));
        assert_eq!(e.stream, Stream::Stdout);
        assert!(!e.partial);
        assert_eq!(e.text, b"hello world");
        let e = parse_line(b"2024-01-02T03:04:05Z stderr P ").unwrap();
        assert!(e.partial);
        assert_eq!(e.text, b"");
        assert_eq!(parse_line(b"2024-01-02T03:04:05Z stdin F x"), None);
        assert_eq!(parse_line(b"garbage"), None);
    }

    #[test]
    fn partial_lines_are_joined_per_stream() {
        let mut a = Assembler::default();
        assert_eq!(a.push(b"2024-01-01T00:00:01Z stdout P hel"), None);
        let err = a.push(b"2024-01-01T00:00:02Z stderr F oops").unwrap();
        assert_eq!(err.text, b"oops\n");
        let out = a.push(b"2024-01-01T00:00:03Z stdout F lo").unwrap();
        assert_eq!(out.text, b"hello\n");
        assert_eq!(
            out.time,
            t("2024-01-01T00:00:01Z"),
            "a joined line keeps its first part's time"
        );
        assert_eq!(
            out.render(true),
            b"2024-01-01T00:00:01.000000000Z hello\n".to_vec()
        );
    }

    #[test]
    fn options_are_validated_like_kube_apiserver() {
        let now = t("2024-01-01T00:01:00Z");
        let o = LogOptions::from_query(
            "follow=true&tailLines=3&timestamps=1&sinceSeconds=60&limitBytes=10",
            now,
        )
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(3));
        assert_eq!(o.since, Some(t("2024-01-01T00:00:00Z")));
        assert_eq!(o.limit_bytes, Some(10));
        let msg = |q: &str| LogOptions::from_query(q, now).unwrap_err().to_string();
        assert_eq!(
            msg("tailLines=-1"),
            "tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            msg("limitBytes=0"),
            "limitBytes: Invalid value: 0: must be greater than 0"
        );
        assert_eq!(
            msg("sinceSeconds=1&sinceTime=2024-01-01T00:00:00Z"),
            "at most one of `sinceTime` or `sinceSeconds` may be specified"
        );
        assert!(msg("tailLines=x").contains("tailLines"));
        assert!(msg("follow=maybe").contains("follow"));
    }

    fn write_log(path: &Path, lines: &[&str]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn reads_rotated_files_oldest_first_with_tail_since_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_log(
            &dir.path().join("0.log.2"),
            &["2024-01-01T00:00:01Z stdout F one"],
        );
        write_log(
            &dir.path().join("0.log.1"),
            &[
                "2024-01-01T00:00:02Z stdout F two",
                "2024-01-01T00:00:03Z stdout P thr",
            ],
        );
        write_log(
            &path,
            &[
                "2024-01-01T00:00:04Z stdout F ee",
                "2024-01-01T00:00:05Z stderr F four",
            ],
        );
        let read = |opts: LogOptions| {
            let mut limit = Limit::new(opts.limit_bytes);
            String::from_utf8(read_logs(&path, &opts, &mut limit).unwrap().0).unwrap()
        };
        assert_eq!(read(LogOptions::default()), "one\ntwo\nthree\nfour\n");
        assert_eq!(
            log_files(&path),
            [
                dir.path().join("0.log.2"),
                dir.path().join("0.log.1"),
                path.clone()
            ]
        );
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(read(tail), "three\nfour\n");
        let none = LogOptions {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert_eq!(read(none), "");
        let since = LogOptions {
            since: Some(t("2024-01-01T00:00:02Z")),
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            read(since),
            "2024-01-01T00:00:02.000000000Z two\n2024-01-01T00:00:03.000000000Z three\n\
             2024-01-01T00:00:05.000000000Z four\n"
        );
        let limited = LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        };
        assert_eq!(read(limited), "one\ntw");
    }

    #[test]
    fn timestamped_rotations_are_read_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_log(
            &dir.path().join("0.log.20240101-000002.000000000"),
            &["2024-01-01T00:00:02Z stdout F b"],
        );
        write_log(
            &dir.path().join("0.log.20240101-000001.000000000"),
            &["2024-01-01T00:00:01Z stdout F a"],
        );
        write_log(&path, &["2024-01-01T00:00:03Z stdout F c"]);
        let mut limit = Limit::new(None);
        let (out, _) = read_logs(&path, &LogOptions::default(), &mut limit).unwrap();
        assert_eq!(out, b"a\nb\nc\n");
    }

    #[tokio::test]
    async fn follow_streams_appends_and_rotation_until_the_container_stops() {
        use std::io::Write;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_log(&path, &["2024-01-01T00:00:01Z stdout F first"]);
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let mut limit = Limit::new(None);
        let (out, position) = read_logs(&path, &opts, &mut limit).unwrap();
        assert_eq!(out, b"first\n");
        let running = Arc::new(AtomicBool::new(true));
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let flag = running.clone();
        let task = tokio::spawn(follow(position, opts, limit, tx, move || {
            flag.load(Ordering::SeqCst)
        }));
        let mut got = Vec::new();
        let mut wait_for = async |want: &str, got: &mut Vec<u8>| {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !String::from_utf8_lossy(got).ends_with(want) {
                let chunk = tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .expect("log line in time");
                got.extend_from_slice(&chunk.expect("stream open"));
            }
        };
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"2024-01-01T00:00:02Z stdout P sec").unwrap();
        f.flush().unwrap();
        f.write_all(b"\n2024-01-01T00:00:02Z stdout F ond\n").unwrap();
        wait_for("second\n", &mut got).await;
        // Rotation: the current file becomes .1 and a new one starts.
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        write_log(&path, &["2024-01-01T00:00:03Z stdout F third"]);
        wait_for("third\n", &mut got).await;
        assert_eq!(String::from_utf8(got).unwrap(), "second\nthird\n");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"2024-01-01T00:00:04Z stderr F last words\n")
            .unwrap();
        running.store(false, Ordering::SeqCst);
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(chunk) = rx.recv().await {
                rest.extend_from_slice(&chunk);
            }
        })
        .await
        .expect("the stream ends once the container stopped");
        assert_eq!(rest, b"last words\n");
        task.await.unwrap();
    }
}
