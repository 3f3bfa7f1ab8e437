//! `kubectl port-forward`: kubectl 1.30+ tunnels a SPDY/3.1 connection through a WebSocket
//! (`SPDY/3.1+portforward.k8s.io`; every binary message carries raw SPDY bytes). For each forwarded
//! connection it opens two streams with the headers `streamtype: error|data`, `port` and `requestid`;
//! the data stream is spliced to the pod's port, and the error stream carries a failure message (or just
//! its close, which tells kubectl the connection is done).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{self, Frame, HeaderReader, HeaderWriter};

/// The subprotocol kubectl asks for.
pub const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// Opens a TCP connection to `port` inside the pod.
pub type Dialer = Arc<dyn Fn(u16) -> std::io::Result<std::net::TcpStream> + Send + Sync>;

/// What the session keeps per forwarded connection.
#[derive(Default)]
struct Request {
    error_stream: Option<u32>,
}

/// Serves one port-forward connection until the client goes away.
pub async fn run(socket: WebSocket, dial: Dialer) {
    let (mut sink, mut source) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if sink.send(Message::Binary(Bytes::from(frame))).await.is_err() {
                break;
            }
        }
    });
    // Header compression contexts are per connection and must see every block in order, so all control
    // frames are read and written here.
    let mut reader = HeaderReader::default();
    let mut headers_out = HeaderWriter::default();
    let mut buf = Vec::new();
    let mut requests: HashMap<String, Request> = HashMap::new();
    let mut data_streams: HashMap<u32, mpsc::UnboundedSender<Option<Vec<u8>>>> = HashMap::new();
    'session: while let Some(Ok(msg)) = source.next().await {
        match msg {
            Message::Binary(bytes) => buf.extend_from_slice(&bytes),
            Message::Close(_) => break,
            _ => continue,
        }
        while let Some(frame) = spdy::take_frame(&mut buf) {
            match frame {
                Frame::Control {
                    kind,
                    flags: _,
                    payload,
                } => match kind {
                    spdy::TYPE_SYN_STREAM => {
                        let Some(id) = spdy::stream_id(&payload) else {
                            break 'session;
                        };
                        let Some(block) = payload.get(10..) else {
                            break 'session;
                        };
                        let Ok(headers) = reader.read(block) else {
                            break 'session;
                        };
                        let header = |name: &str| {
                            headers
                                .iter()
                                .find(|(k, _)| k == name)
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default()
                        };
                        let request = header("requestid");
                        let _ = out_tx.send(spdy::syn_reply(id, &mut headers_out)).await;
                        match header("streamtype").as_str() {
                            "error" => requests.entry(request).or_default().error_stream = Some(id),
                            "data" => {
                                let error_stream = requests.remove(&request).and_then(|r| r.error_stream);
                                let (tx, rx) = mpsc::unbounded_channel();
                                data_streams.insert(id, tx);
                                let port = header("port");
                                tokio::spawn(forward(
                                    id,
                                    error_stream,
                                    port,
                                    dial.clone(),
                                    rx,
                                    out_tx.clone(),
                                ));
                            }
                            _ => {}
                        }
                    }
                    spdy::TYPE_HEADERS => {
                        // Only to keep the decompression context in step.
                        let Some(Ok(_)) = payload.get(4..).map(|b| reader.read(b)) else {
                            break 'session;
                        };
                    }
                    spdy::TYPE_RST_STREAM => {
                        if let Some(id) = spdy::stream_id(&payload)
                            && let Some(tx) = data_streams.remove(&id)
                        {
                            let _ = tx.send(None);
                        }
                    }
                    spdy::TYPE_PING => {
                        let _ = out_tx.send(spdy::control(spdy::TYPE_PING, 0, &payload)).await;
                    }
                    spdy::TYPE_GOAWAY => break 'session,
                    _ => {}
                },
                Frame::Data { stream, flags, data } => {
                    let fin = flags & spdy::FLAG_FIN != 0;
                    if let Some(tx) = data_streams.get(&stream) {
                        if !data.is_empty() {
                            let _ = tx.send(Some(data));
                        }
                        if fin {
                            let _ = tx.send(None);
                            data_streams.remove(&stream);
                        }
                    }
                }
            }
        }
    }
    // Dropping the senders ends every forward's write half; the writer ends with the last frame.
    drop(data_streams);
    drop(out_tx);
    let _ = writer.await;
}

/// One forwarded connection: dial, then copy both ways; errors go to the error stream.
async fn forward(
    data_stream: u32,
    error_stream: Option<u32>,
    port: String,
    dial: Dialer,
    mut incoming: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let finish = async |message: Option<String>| {
        let _ = out.send(spdy::data(data_stream, true, &[])).await;
        if let Some(e) = error_stream {
            let _ = out
                .send(spdy::data(e, true, message.unwrap_or_default().as_bytes()))
                .await;
        }
    };
    let Ok(port_number) = port.parse::<u16>() else {
        return finish(Some(format!("invalid port {port:?}"))).await;
    };
    let connected = tokio::task::spawn_blocking(move || dial(port_number))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .and_then(|tcp| {
            tcp.set_nonblocking(true)?;
            tokio::net::TcpStream::from_std(tcp)
        });
    let tcp = match connected {
        Ok(tcp) => tcp,
        Err(e) => {
            return finish(Some(format!(
                "error forwarding port {port_number} to pod: failed to connect to localhost:{port_number}: {e}"
            )))
            .await;
        }
    };
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let to_pod = async move {
        while let Some(Some(chunk)) = incoming.recv().await {
            if tcp_write.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = tcp_write.shutdown().await;
    };
    let from_pod = {
        let out = out.clone();
        async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match tcp_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if out.send(spdy::data(data_stream, false, &buf[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    };
    // The pod closing its side ends the connection for kubectl; what kubectl still sends is moot then.
    tokio::select! {
        _ = from_pod => {}
        _ = async { to_pod.await; std::future::pending::<()>().await } => {}
    }
    finish(None).await;
}
