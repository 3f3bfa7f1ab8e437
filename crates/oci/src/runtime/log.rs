//! The CRI log format the kubelet and `kubectl logs` read: one record per line,
//! `<RFC 3339 nanos> <stdout|stderr> <F|P> <content>`, where `P` marks a partial line (split because it was
//! too long) and `F` the record that ends one. Rotated by size like the kubelet does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};

/// Longest record content before a line is split (containerd's default).
pub(crate) const MAX_LINE: usize = 16 * 1024;
/// kubelet's `containerLogMaxSize` default.
pub(crate) const MAX_SIZE: u64 = 10 * 1024 * 1024;
/// kubelet's `containerLogMaxFiles` default (the live file included).
pub(crate) const MAX_FILES: usize = 5;

pub(crate) struct CriLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: usize,
}

impl CriLog {
    pub fn open(path: &Path, max_size: u64, max_files: usize) -> io::Result<CriLog> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(CriLog {
            path: path.to_owned(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
        })
    }

    /// Writes one record. `content` excludes the newline.
    pub fn record(&mut self, stream: &str, partial: bool, content: &[u8]) -> io::Result<()> {
        let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let mut line = Vec::with_capacity(content.len() + ts.len() + 12);
        line.extend_from_slice(ts.as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(content);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// Renames the live file to `<path>.<UTC timestamp>` (sortable) and starts a new one; keeps the newest
    /// `max_files - 1` rotated files.
    fn rotate(&mut self) -> io::Result<()> {
        let stamp = Utc::now().format("%Y%m%d-%H%M%S%.9f");
        let rotated = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        fs::rename(&self.path, &rotated)?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        let mut old = rotated_files(&self.path);
        while old.len() > self.max_files - 1 {
            let _ = fs::remove_file(old.remove(0));
        }
        Ok(())
    }
}

/// The rotated files of the log at `path`, oldest first.
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// Copies `reader` into the log as `stream` until EOF (or EIO, which is how a terminal reports that its
/// other side is gone), splitting lines longer than [`MAX_LINE`].
pub(crate) fn pump(mut reader: impl Read, stream: &str, log: &parking_lot::Mutex<CriLog>) -> io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => break,
            Err(e) => return Err(e),
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + pos];
            let mut chunks = line.chunks(MAX_LINE).peekable();
            if line.is_empty() {
                log.lock().record(stream, false, b"")?;
            }
            while let Some(chunk) = chunks.next() {
                log.lock().record(stream, chunks.peek().is_some(), chunk)?;
            }
            start += pos + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            log.lock().record(stream, true, &pending[..MAX_LINE])?;
            pending.drain(..MAX_LINE);
        }
    }
    if !pending.is_empty() {
        log.lock().record(stream, false, &pending)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path) -> Vec<(String, String, String)> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                let ts = parts.next().unwrap();
                assert!(
                    chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
                    "bad timestamp {ts}"
                );
                let stream = parts.next().unwrap().to_owned();
                let tag = parts.next().unwrap().to_owned();
                (stream, tag, parts.next().unwrap_or("").to_owned())
            })
            .collect()
    }

    #[test]
    fn lines_become_records_and_long_lines_are_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let log = parking_lot::Mutex::new(CriLog::open(&path, MAX_SIZE, MAX_FILES).unwrap());
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("hello\n\n{long}\nno newline");
        pump(input.as_bytes(), "stderr", &log).unwrap();
        let got = records(&path);
        let want = [
            ("stderr", "F", "hello".to_string()),
            ("stderr", "F", String::new()),
            ("stderr", "P", "x".repeat(MAX_LINE)),
            ("stderr", "F", "x".repeat(10)),
            ("stderr", "F", "no newline".to_string()),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                (g.0.as_str(), g.1.as_str(), g.2.as_str()),
                (w.0, w.1, w.2.as_str())
            );
        }
    }

    #[test]
    fn rotation_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = CriLog::open(&path, 200, 3).unwrap();
        for i in 0..40 {
            log.record("stdout", false, format!("line {i}").as_bytes())
                .unwrap();
        }
        let rotated = rotated_files(&path);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        assert!(fs::metadata(&path).unwrap().len() <= 200);
        let last = records(&path).pop().unwrap();
        assert_eq!(last.2, "line 39");
        let newest_rotated = records(rotated.last().unwrap());
        let first_live = records(&path)[0].2.clone();
        let n: usize = first_live.trim_start_matches("line ").parse().unwrap();
        assert_eq!(newest_rotated.last().unwrap().2, format!("line {}", n - 1));
    }
}
