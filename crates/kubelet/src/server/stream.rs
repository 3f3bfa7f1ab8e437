//! Exec and attach sessions over WebSocket, the `v5.channel.k8s.io` / `v4.channel.k8s.io` protocols that
//! kubectl (1.30+) speaks through the API server.
//!
//! Every message is binary; its first byte names the channel: 0 stdin, 1 stdout, 2 stderr, 3 the final
//! `Status` (exit code in `details.causes[{reason: ExitCode}]`), 4 terminal resize (`{"Width":…,"Height":…}`)
//! and, in v5 only, 255 "close this channel" (`ff 00`: the client's stdin ended). The process's pipes are
//! blocking, so each is pumped by its own blocking task; one task writes to the socket.

use std::io::{Read, Write};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Duration;

/// The subprotocols served, preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// After the process exits, how long its output may take to drain (a background child can hold the
/// pipes open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A running process's stdio as blocking pipes, its resize hook and how to wait for it.
pub struct ExecIo {
    pub stdin: Option<Box<dyn Write + Send>>,
    pub stdout: Option<Box<dyn Read + Send>>,
    pub stderr: Option<Box<dyn Read + Send>>,
    /// Sets the terminal size (columns, rows); only for sessions with a tty.
    pub resize: Option<Box<dyn FnMut(u16, u16) + Send>>,
    /// Blocks until the process ends; its exit code, or why it could not be waited for.
    pub wait: Box<dyn FnOnce() -> Result<i32, String> + Send>,
    /// Ends the process when its client went away: a shell on a terminal would otherwise wait for input
    /// forever (our own output pump keeps the terminal open). `None`: the process is left to finish.
    pub kill: Option<Box<dyn FnOnce() + Send>>,
}

impl ExecIo {
    /// Wraps a process `runc exec` started. Its wait and resize both need the process, so waiting polls
    /// instead of blocking a lock that a resize would then wait behind.
    pub fn from_runtime(mut process: rkube_oci::runtime::ExecProcess) -> ExecIo {
        let stdin = process.stdin.take().map(|f| Box::new(f) as Box<dyn Write + Send>);
        let stdout = process.stdout.take().map(|f| Box::new(f) as Box<dyn Read + Send>);
        let stderr = process.stderr.take().map(|f| Box::new(f) as Box<dyn Read + Send>);
        let process = std::sync::Arc::new(parking_lot::Mutex::new(process));
        let for_resize = process.clone();
        let for_kill = process.clone();
        ExecIo {
            stdin,
            stdout,
            stderr,
            resize: Some(Box::new(move |width, height| {
                if let Err(e) = for_resize.lock().resize(width, height) {
                    tracing::debug!(error = %e, "resizing an exec terminal failed");
                }
            })),
            wait: Box::new(move || {
                loop {
                    match process.lock().try_wait() {
                        Ok(Some(code)) => return Ok(code),
                        Ok(None) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }),
            kill: Some(Box::new(move || {
                let _ = for_kill.lock().kill();
            })),
        }
    }

    /// Wraps an attachment to a container's own stdio. The output arrives as CRI log records, which a
    /// thread turns back into a stdout and a stderr pipe; the session ends when the container has exited
    /// and its output is read. The container's exit is not the attach's: it reports success, as the
    /// kubelet's attach does.
    pub fn from_attach(mut attach: rkube_oci::runtime::Attach) -> std::io::Result<ExecIo> {
        use rkube_oci::runtime::Stream as Output;
        let stdin = attach.stdin.take().map(|f| Box::new(f) as Box<dyn Write + Send>);
        let (out_r, mut out_w) = std::io::pipe()?;
        let (err_r, mut err_w) = std::io::pipe()?;
        let attach = std::sync::Arc::new(parking_lot::Mutex::new(attach));
        let follower = attach.clone();
        let pump = std::thread::spawn(move || {
            loop {
                let mut a = follower.lock();
                // A short wait keeps the lock free for resizes.
                let next = a.output.next(std::time::Duration::from_millis(200));
                let finished = matches!(next, Ok(None)) && a.output.finished();
                drop(a);
                let written = match next {
                    Ok(Some((Output::Stdout, bytes))) => out_w.write_all(&bytes),
                    Ok(Some((Output::Stderr, bytes))) => err_w.write_all(&bytes),
                    Ok(None) if finished => return,
                    Ok(None) => Ok(()),
                    Err(_) => return,
                };
                // The client went away (its side of the pipe is closed).
                if written.is_err() {
                    return;
                }
            }
        });
        Ok(ExecIo {
            stdin,
            stdout: Some(Box::new(out_r)),
            stderr: Some(Box::new(err_r)),
            resize: Some(Box::new(move |width, height| {
                if let Err(e) = attach.lock().resize(width, height) {
                    tracing::debug!(error = %e, "resizing an attached terminal failed");
                }
            })),
            wait: Box::new(move || {
                pump.join()
                    .map(|_| 0)
                    .map_err(|_| "attach output failed".to_string())
            }),
            // Detaching leaves the container alone.
            kill: None,
        })
    }
}

/// The query of an exec or attach request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl StreamOptions {
    /// Parses `command=…&command=…&stdin=1&stdout=1&stderr=1&tty=1`; `exec` requires a command.
    pub fn from_query(query: &str, exec: bool) -> Result<StreamOptions, String> {
        let mut o = StreamOptions::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let on = matches!(v.as_ref(), "1" | "true" | "True" | "TRUE" | "");
            match k.as_ref() {
                "command" => o.command.push(v.into_owned()),
                "input" | "stdin" => o.stdin = on,
                "output" | "stdout" => o.stdout = on,
                "error" | "stderr" => o.stderr = on,
                "tty" => o.tty = on,
                _ => {}
            }
        }
        // As the kubelet: a terminal has one output stream.
        if o.tty {
            o.stderr = false;
        }
        if !o.stdin && !o.stdout && !o.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".to_string());
        }
        if exec && o.command.is_empty() {
            return Err("you must specify at least one command for the container".to_string());
        }
        Ok(o)
    }
}

/// The `Status` sent on the error channel when the process ended.
pub fn exit_status(command: &[String], result: &Result<i32, String>) -> serde_json::Value {
    use serde_json::json;
    match result {
        Ok(0) => json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(e) => json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": e,
            "reason": "InternalError",
            "code": 500,
        }),
    }
}

/// Copies one output pipe to the socket as `channel` frames (or discards it when the client did not ask
/// for that stream, so the process never blocks on a full pipe).
fn pump(mut reader: Box<dyn Read + Send>, channel: u8, forward: bool, out: mpsc::Sender<Message>) {
    let mut buf = vec![0u8; 32 * 1024];
    buf[0] = channel;
    loop {
        match reader.read(&mut buf[1..]) {
            Ok(0) => return,
            Ok(n) => {
                if forward
                    && out
                        .blocking_send(Message::Binary(Bytes::copy_from_slice(&buf[..=n])))
                        .is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The terminal size a resize message carries.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TerminalSize {
    width: u16,
    height: u16,
}

/// Runs one session until the process ends (then reports its exit and closes) or the client goes away
/// (then the process's stdin is closed and it is left to finish).
pub async fn run(socket: WebSocket, protocol: String, opts: StreamOptions, mut io: ExecIo) {
    let v5 = protocol.starts_with("v5.");
    let (mut sink, mut source) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
    });

    let mut pumps = Vec::new();
    for (channel, reader, forward) in [
        (STDOUT, io.stdout.take(), opts.stdout),
        (STDERR, io.stderr.take(), opts.stderr),
    ] {
        if let Some(reader) = reader {
            let out = out_tx.clone();
            pumps.push(tokio::task::spawn_blocking(move || {
                pump(reader, channel, forward, out)
            }));
        }
    }
    let mut stdin_tx = match (opts.stdin, io.stdin.take()) {
        (true, Some(mut stdin)) => {
            let (tx, rx) = std::sync::mpsc::channel::<Bytes>();
            tokio::task::spawn_blocking(move || {
                while let Ok(data) = rx.recv() {
                    if stdin.write_all(&data).and_then(|_| stdin.flush()).is_err() {
                        return;
                    }
                }
                // Dropping `stdin` here closes the process's input.
            });
            Some(tx)
        }
        // Not asked for: the process sees end of input at once.
        _ => None,
    };
    let mut resize = io.resize.take();
    let mut waiter = tokio::task::spawn_blocking(io.wait);

    let exit = loop {
        tokio::select! {
            result = &mut waiter => break Some(result.unwrap_or_else(|e| Err(e.to_string()))),
            msg = source.next() => match msg {
                Some(Ok(Message::Binary(data))) => match (data.first(), data.get(1..)) {
                    (Some(&STDIN), Some(payload)) => {
                        if let Some(tx) = &stdin_tx && !payload.is_empty() {
                            let _ = tx.send(data.slice(1..));
                        }
                    }
                    (Some(&RESIZE), Some(payload)) => {
                        if let (Some(resize), Ok(size)) =
                            (resize.as_mut(), serde_json::from_slice::<TerminalSize>(payload))
                        {
                            resize(size.width, size.height);
                        }
                    }
                    (Some(&CLOSE), Some([STDIN])) if v5 => stdin_tx = None,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                // Pings are answered by the socket itself; text frames belong to older protocols.
                Some(Ok(_)) => {}
            },
        }
    };
    drop(stdin_tx);
    let Some(exit) = exit else {
        // The client went away: nobody is left to tell how the process ends.
        drop(out_tx);
        writer.abort();
        if let Some(kill) = io.kill.take() {
            let _ = tokio::task::spawn_blocking(kill).await;
        }
        return;
    };
    let drained = async {
        for p in pumps {
            let _ = p.await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_GRACE, drained).await;
    let status = exit_status(&opts.command, &exit).to_string();
    let mut frame = Vec::with_capacity(status.len() + 1);
    frame.push(ERROR);
    frame.extend_from_slice(status.as_bytes());
    let _ = out_tx.send(Message::Binary(Bytes::from(frame))).await;
    let _ = out_tx
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_the_kubelet() {
        let o = StreamOptions::from_query(
            "command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&stderr=true&tty=true",
            true,
        )
        .unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.tty);
        assert!(!o.stderr, "a terminal has no separate stderr");
        assert_eq!(
            StreamOptions::from_query("command=ls", true).unwrap_err(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert_eq!(
            StreamOptions::from_query("stdout=1", true).unwrap_err(),
            "you must specify at least one command for the container"
        );
        assert!(StreamOptions::from_query("stdout=1", false).is_ok());
    }

    #[test]
    fn exit_codes_become_statuses_kubectl_understands() {
        let cmd = ["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(exit_status(&cmd, &Ok(0))["status"], "Success");
        let s = exit_status(&cmd, &Ok(3));
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"],
            serde_json::json!([{"reason": "ExitCode", "message": "3"}])
        );
        let e = exit_status(&cmd, &Err("runc exec failed".into()));
        assert_eq!(e["reason"], "InternalError");
        assert_eq!(e["message"], "runc exec failed");
    }
}
