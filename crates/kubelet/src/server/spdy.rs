//! Just enough SPDY/3.1 to serve `kubectl port-forward`: frames, and the zlib-compressed header blocks
//! (one compression context per direction for the whole connection, primed with the protocol's
//! dictionary). Pure code over byte buffers; the session lives in [`super::portforward`].

use std::sync::OnceLock;

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

/// Why a SPDY byte stream could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// A frame or header block is malformed.
    #[error("spdy: {0}")]
    Protocol(&'static str),
}

const VERSION: u16 = 3;
pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const FLAG_FIN: u8 = 0x01;
/// Header blocks larger than this (decompressed, per connection) are refused.
const MAX_HEADER_BYTES: usize = 1 << 20;

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1): length-prefixed
/// header names and values, then common value fragments.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414415416417\
            502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request\
            401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented\
            503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, \
            Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,\
            application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch\
            charset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// Decompresses the peer's header blocks: one zlib stream across the connection, its window primed with
/// the dictionary (kept in front of the output so back-references into it resolve).
pub struct HeaderReader {
    inflater: Box<DecompressorOxide>,
    window: Vec<u8>,
    pos: usize,
    header_skipped: bool,
}

impl Default for HeaderReader {
    fn default() -> Self {
        let window = dictionary().to_vec();
        HeaderReader {
            inflater: Box::default(),
            pos: window.len(),
            window,
            header_skipped: false,
        }
    }
}

impl HeaderReader {
    /// The name/value pairs of one compressed header block (multiple values joined by NUL are split).
    pub fn read(&mut self, mut block: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
        if !self.header_skipped {
            // The zlib header (and the dictionary's id when FDICT is set): the window already has it.
            let [_, flg, ..] = *block else {
                return Err(SpdyError::Protocol("short zlib header"));
            };
            let skip = if flg & 0x20 != 0 { 6 } else { 2 };
            block = block
                .get(skip..)
                .ok_or(SpdyError::Protocol("short zlib header"))?;
            self.header_skipped = true;
        }
        let start = self.pos;
        loop {
            if self.window.len() - self.pos < 16 * 1024 {
                if self.window.len() > MAX_HEADER_BYTES {
                    return Err(SpdyError::Protocol("header blocks too large"));
                }
                self.window.resize(self.window.len() + 64 * 1024, 0);
            }
            let flags = inflate_flags::TINFL_FLAG_HAS_MORE_INPUT
                | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
            let (status, used, produced) =
                decompress(&mut self.inflater, block, &mut self.window, self.pos, flags);
            self.pos += produced;
            block = &block[used..];
            match status {
                TINFLStatus::HasMoreOutput => continue,
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done if block.is_empty() => break,
                TINFLStatus::NeedsMoreInput | TINFLStatus::Done => {}
                _ => return Err(SpdyError::Protocol("corrupt header block")),
            }
        }
        parse_pairs(&self.window[start..self.pos])
    }
}

fn parse_pairs(mut raw: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let (head, rest) = raw
            .split_at_checked(n)
            .ok_or(SpdyError::Protocol("short header block"))?;
        raw = rest;
        Ok(head)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().unwrap_or_default());
    let mut pairs = Vec::new();
    for _ in 0..count {
        let len = u32::from_be_bytes(take(4)?.try_into().unwrap_or_default()) as usize;
        let name = String::from_utf8_lossy(take(len)?).into_owned();
        let len = u32::from_be_bytes(take(4)?.try_into().unwrap_or_default()) as usize;
        let value = String::from_utf8_lossy(take(len)?).into_owned();
        for v in value.split('\0') {
            pairs.push((name.clone(), v.to_string()));
        }
    }
    Ok(pairs)
}

/// Compresses our header blocks as zlib *stored* blocks, each block set ending in a sync flush: valid for
/// any inflater primed with the dictionary, and our replies carry next to nothing.
#[derive(Default)]
pub struct HeaderWriter {
    started: bool,
}

impl HeaderWriter {
    pub fn write(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (pairs.len() as u32).to_be_bytes().to_vec();
        for (name, value) in pairs {
            for s in [name, value] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 16);
        if !self.started {
            // CMF 0x78 (deflate, 32 KiB window), FLG with FDICT and a valid check; then the dictionary id.
            out.extend_from_slice(&[0x78, 0xf9]);
            out.extend_from_slice(&adler32(dictionary()).to_be_bytes());
            self.started = true;
        }
        for chunk in raw.chunks(0xffff) {
            let len = chunk.len() as u16;
            out.push(0x00);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        // An empty stored block, as a zlib sync flush ends: Go's inflater hands out a stored block's bytes
        // only at such a flush (or when its window fills), and must not read past the frame for it.
        out.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
        out
    }
}

/// One frame off the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Control { kind: u16, flags: u8, payload: Vec<u8> },
    Data { stream: u32, flags: u8, data: Vec<u8> },
}

/// Takes one whole frame off the front of `buf`, if it holds one.
pub fn take_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    if buf.len() < 8 {
        return None;
    }
    let len = (usize::from(buf[5]) << 16) | (usize::from(buf[6]) << 8) | usize::from(buf[7]);
    if buf.len() < 8 + len {
        return None;
    }
    let head: [u8; 8] = buf[..8].try_into().ok()?;
    let body = buf[8..8 + len].to_vec();
    buf.drain(..8 + len);
    let flags = head[4];
    Some(if head[0] & 0x80 != 0 {
        Frame::Control {
            kind: u16::from_be_bytes([head[2], head[3]]),
            flags,
            payload: body,
        }
    } else {
        Frame::Data {
            stream: u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff,
            flags,
            data: body,
        }
    })
}

/// The stream id at the start of a control frame's payload.
pub fn stream_id(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) & 0x7fff_ffff)
}

pub fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

pub fn data(stream: u32, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(if fin { FLAG_FIN } else { 0 });
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

pub fn syn_reply(stream: u32, headers: &mut HeaderWriter) -> Vec<u8> {
    let mut payload = stream.to_be_bytes().to_vec();
    payload.extend(headers.write(&[]));
    control(TYPE_SYN_REPLY, 0, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_protocols() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b"enq=0."));
    }

    #[test]
    fn header_blocks_round_trip_across_a_connection() {
        let mut w = HeaderWriter::default();
        let mut r = HeaderReader::default();
        let first = w.write(&[("streamtype", "error"), ("port", "8080")]);
        assert_eq!(&first[..2], &[0x78, 0xf9]);
        assert_eq!((u16::from(first[0]) << 8 | u16::from(first[1])) % 31, 0);
        assert_eq!(
            r.read(&first).unwrap(),
            [
                ("streamtype".to_string(), "error".to_string()),
                ("port".into(), "8080".into())
            ]
        );
        let second = w.write(&[("requestid", "0")]);
        assert_eq!(
            r.read(&second).unwrap(),
            [("requestid".to_string(), "0".to_string())]
        );
    }

    /// Header blocks kubectl 1.32 sent (Go's zlib with the dictionary, BestCompression, sync flushes).
    #[test]
    fn kubectl_header_blocks_decompress() {
        let first: &[u8] = &[
            0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x25, 0x3a, 0x48, 0xf9, 0x5b, 0x04, 0x4e, 0xea, 0x16,
            0x06, 0x16, 0x06, 0x0c, 0x0c, 0x0c, 0x9c, 0x45, 0x90, 0xf8, 0xca, 0x04, 0xa5, 0x63, 0x46, 0x03,
            0x70, 0x4a, 0x2c, 0x29, 0x4a, 0x4d, 0xcc, 0x85, 0x16, 0x36, 0xac, 0xa9, 0xa0, 0xa8, 0x00, 0x00,
            0x00, 0x00, 0xff, 0xff,
        ];
        let second: &[u8] = &[
            0x82, 0x6a, 0x26, 0xa4, 0x18, 0x54, 0x32, 0x25, 0xa2, 0x5b, 0x02, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let mut r = HeaderReader::default();
        let sorted = |mut pairs: Vec<(String, String)>| {
            pairs.sort();
            pairs
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            sorted(r.read(first).unwrap()),
            ["port=8080", "requestid=0", "streamtype=error"]
        );
        assert_eq!(
            sorted(r.read(second).unwrap()),
            ["port=8080", "requestid=0", "streamtype=data"]
        );
    }

    #[test]
    fn frames_are_cut_from_a_byte_stream() {
        let mut buf = control(TYPE_PING, 0, &7u32.to_be_bytes());
        buf.extend(data(3, true, b"hi"));
        let partial = buf.split_off(buf.len() - 1);
        let mut rest = buf;
        assert_eq!(
            take_frame(&mut rest),
            Some(Frame::Control {
                kind: TYPE_PING,
                flags: 0,
                payload: 7u32.to_be_bytes().to_vec()
            })
        );
        assert_eq!(take_frame(&mut rest), None, "half a frame waits for the rest");
        rest.extend(partial);
        assert_eq!(
            take_frame(&mut rest),
            Some(Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                data: b"hi".to_vec()
            })
        );
    }
}
