//! Attaching to a running container's own stdio (`kubectl attach`, `kubectl run -it`): input through the
//! shim's FIFOs, output by following the CRI log the shim writes.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

use super::{EXIT, RuntimeError, io_err, shim};

/// A connection to a container's stdio. Dropping it detaches; the container is unaffected.
pub struct Attach {
    /// Writes reach the container's stdin; `None` unless the container was created with `stdin`.
    pub stdin: Option<File>,
    /// The container's output from the moment of attaching.
    pub output: LogFollower,
    resize: Option<File>,
}

impl Attach {
    pub(crate) fn open(dir: &Path, log_path: &Path) -> Result<Attach, RuntimeError> {
        let attach = dir.join(shim::ATTACH_DIR);
        Ok(Attach {
            stdin: open_fifo(&attach.join("stdin"))?,
            output: LogFollower::from_end(log_path, dir)?,
            resize: open_fifo(&attach.join("resize"))?,
        })
    }

    /// Resizes the container's terminal (no-op without one).
    pub fn resize(&mut self, width: u16, height: u16) -> Result<(), RuntimeError> {
        if let Some(fifo) = &mut self.resize {
            fifo.write_all(format!("{width} {height}\n").as_bytes())
                .map_err(io_err(Path::new("attach/resize")))?;
        }
        Ok(())
    }
}

/// Opens a FIFO for writing without blocking when nobody reads it (a dead shim): `None` when absent.
fn open_fifo(path: &Path) -> Result<Option<File>, RuntimeError> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
    {
        Ok(file) => {
            // Blocking from here on: a full pipe should slow the writer, not fail it.
            fcntl(&file, FcntlArg::F_SETFL(OFlag::empty())).map_err(super::sys_err("fcntl"))?;
            Ok(Some(file))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => Err(RuntimeError::Shim {
            id: path.display().to_string(),
            message: "the container's shim is not running".into(),
        }),
        Err(source) => Err(RuntimeError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Which of the container's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Follows a container's CRI log across rotations and turns records back into the bytes the container
/// wrote. Ends once the container has exited and everything it wrote is read.
pub struct LogFollower {
    path: PathBuf,
    container_dir: PathBuf,
    reader: BufReader<File>,
    inode: u64,
    line: Vec<u8>,
}

impl LogFollower {
    fn from_end(path: &Path, container_dir: &Path) -> Result<LogFollower, RuntimeError> {
        let mut file = File::open(path).map_err(io_err(path))?;
        file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
        let inode = file.metadata().map_err(io_err(path))?.ino();
        Ok(LogFollower {
            path: path.to_owned(),
            container_dir: container_dir.to_owned(),
            reader: BufReader::new(file),
            inode,
            line: Vec::new(),
        })
    }

    /// The next output chunk, waiting up to `timeout`. `Ok(None)` on timeout *or* at the end; tell them
    /// apart with [`LogFollower::finished`].
    pub fn next(&mut self, timeout: Duration) -> Result<Option<(Stream, Vec<u8>)>, RuntimeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self
                .reader
                .read_until(b'\n', &mut self.line)
                .map_err(io_err(&self.path))?;
            if n > 0 && self.line.ends_with(b"\n") {
                let line = std::mem::take(&mut self.line);
                if let Some(chunk) = decode(&line) {
                    return Ok(Some(chunk));
                }
                continue;
            }
            // At the end of what is written: a rotation means the rest is in a new file.
            if self.line.is_empty()
                && let Ok(meta) = std::fs::metadata(&self.path)
                && meta.ino() != self.inode
                && let Ok(file) = File::open(&self.path)
            {
                self.inode = meta.ino();
                self.reader = BufReader::new(file);
                continue;
            }
            if self.finished() || Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the container has exited and its log is read to the end.
    pub fn finished(&mut self) -> bool {
        if !self.container_dir.join(EXIT).exists() && shim::alive(&self.container_dir) {
            return false;
        }
        // The shim writes the exit record after the last log line, so one more read settles it.
        matches!(self.reader.fill_buf(), Ok(buf) if buf.is_empty()) && self.line.is_empty()
    }
}

/// `<time> <stream> <F|P> <content>\n` → the bytes as written (a newline restored after `F`).
fn decode(line: &[u8]) -> Option<(Stream, Vec<u8>)> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let _time = parts.next()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"\n");
    let mut bytes = content.strip_suffix(b"\n").unwrap_or(content).to_vec();
    if tag == b"F" {
        bytes.push(b'\n');
    }
    Some((stream, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_to_the_original_bytes() {
        assert_eq!(
            decode(b"2024-01-01T00:00:00.000000001Z stdout F hello world\n"),
            Some((Stream::Stdout, b"hello world\n".to_vec()))
        );
        assert_eq!(
            decode(b"2024-01-01T00:00:00Z stderr P part\n"),
            Some((Stream::Stderr, b"part".to_vec()))
        );
        assert_eq!(
            decode(b"2024-01-01T00:00:00Z stdout F \n"),
            Some((Stream::Stdout, b"\n".to_vec()))
        );
        assert_eq!(decode(b"garbage\n"), None);
    }
}
