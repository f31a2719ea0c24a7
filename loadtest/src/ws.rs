//! A minimal WebSocket client: the HTTP upgrade by hand (so a refusal's status and
//! `Retry-After` can be checked), and frames encoded and decoded by hand, so the load
//! generator spends as little CPU per message as possible.
//!
//! Client frames are masked with the all-zero key: the server unmasks every frame the
//! same way whatever the key, and the client skips the XOR (RFC 6455 requires a mask,
//! not an unpredictable one, from a client that is not a browser).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::target::{ReadHalf, WriteHalf, WsTarget};

/// Largest HTTP response head accepted during the upgrade.
const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Largest message the client reassembles (above any relay limit it tests).
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;
/// Initial read buffer of a connection; it grows for large messages.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Room offered to each read at least. A read that fills the room it was offered leaves
/// the socket marked readable, so the next read is one more syscall: with the room left
/// over after the frames already split off (often a few hundred bytes), a relay's batch
/// of notifications took two or three reads.
const READ_ROOM_MIN: usize = 2 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl OpCode {
    fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            _ => return None,
        })
    }
}

/// One whole message (or control frame) from the server.
#[derive(Debug)]
pub struct Message {
    pub opcode: OpCode,
    pub payload: Bytes,
}

impl Message {
    /// The close code of a close frame, if it carries one.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OpCode::Close && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// How the server answered the upgrade request.
pub enum Upgrade {
    Accepted(WsConn),
    Refused {
        status: u16,
        retry_after: Option<String>,
    },
}

/// Opens a TCP connection to `addr`, from `source` when given (to spread ephemeral
/// ports over several loopback addresses).
///
/// # Errors
/// The connection fails.
pub async fn connect_tcp(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(ip) => {
            let socket = match ip {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects (over TLS for `wss://`) and performs the WebSocket upgrade, bounded by
/// `timeout`.
///
/// # Errors
/// Connection failure, timeout, or a response that is not HTTP.
pub async fn connect(
    target: &WsTarget,
    source: Option<IpAddr>,
    timeout: Duration,
) -> anyhow::Result<Upgrade> {
    tokio::time::timeout(timeout, async {
        let (mut read, mut write) = crate::target::open(target.addr, source, target.tls.as_ref())
            .await
            .with_context(|| format!("connecting to {}", target.addr))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            target.path, target.host_header
        );
        write.write_all(request.as_bytes()).await?;
        write.flush().await?;
        let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
        let head_len = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end + 4;
            }
            if buf.len() > RESPONSE_HEAD_BYTES_MAX {
                bail!("upgrade response head too long");
            }
            if read.read_buf(&mut buf).await? == 0 {
                bail!("connection closed during the upgrade");
            }
        };
        let head = crate::http::parse_head(&buf[..head_len])?;
        buf.advance(head_len);
        if head.status != 101 {
            return Ok(Upgrade::Refused {
                status: head.status,
                retry_after: head.header("retry-after").map(str::to_string),
            });
        }
        Ok(Upgrade::Accepted(WsConn {
            reader: FrameReader { io: read, buf },
            writer: FrameWriter { io: write },
        }))
    })
    .await
    .map_err(|_| anyhow::anyhow!("upgrade timed out after {timeout:?}"))?
}

/// Connects, upgrades and expects acceptance.
///
/// # Errors
/// Any failure, including a refused upgrade.
pub async fn connect_accepted(
    target: &WsTarget,
    source: Option<IpAddr>,
    timeout: Duration,
) -> anyhow::Result<WsConn> {
    match connect(target, source, timeout).await? {
        Upgrade::Accepted(conn) => Ok(conn),
        Upgrade::Refused { status, .. } => bail!("upgrade refused with HTTP {status}"),
    }
}

/// An open WebSocket connection, in halves that can go to different tasks.
pub struct WsConn {
    pub reader: FrameReader<ReadHalf>,
    pub writer: FrameWriter<WriteHalf>,
}

/// Reads whole messages; continuation frames are reassembled.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// The next message, or `None` when the server closed the stream.
    ///
    /// # Errors
    /// I/O errors and protocol violations (bad opcode, message over the maximum).
    pub async fn next(&mut self) -> anyhow::Result<Option<Message>> {
        let mut fragments: Option<(OpCode, BytesMut)> = None;
        loop {
            let Some((fin, opcode, payload)) = self.next_frame().await? else {
                return Ok(None);
            };
            match (opcode, fragments.as_mut()) {
                (OpCode::Continuation, Some((_, collected))) => {
                    collected.extend_from_slice(&payload);
                    if collected.len() > MESSAGE_BYTES_MAX {
                        bail!("message over {MESSAGE_BYTES_MAX} bytes");
                    }
                }
                (OpCode::Continuation, None) => bail!("continuation without a first frame"),
                (OpCode::Text | OpCode::Binary, _) if !fin => {
                    fragments = Some((opcode, BytesMut::from(&payload[..])));
                    continue;
                }
                _ => return Ok(Some(Message { opcode, payload })),
            }
            if fin {
                let (opcode, collected) = fragments.take().expect("checked above");
                return Ok(Some(Message {
                    opcode,
                    payload: collected.freeze(),
                }));
            }
        }
    }

    async fn next_frame(&mut self) -> anyhow::Result<Option<(bool, OpCode, Bytes)>> {
        loop {
            // Bytes still missing from the frame at the front (0: its header is not in).
            let mut missing = 0;
            if let Some(header) = parse_header(&self.buf)? {
                let total = header.header_len + header.payload_len;
                if self.buf.len() >= total {
                    self.buf.advance(header.header_len);
                    let mut payload = self.buf.split_to(header.payload_len);
                    if let Some(key) = header.mask {
                        for (i, b) in payload.iter_mut().enumerate() {
                            *b ^= key[i % 4];
                        }
                    }
                    return Ok(Some((header.fin, header.opcode, payload.freeze())));
                }
                missing = total - self.buf.len();
            }
            if self.buf.capacity() - self.buf.len() < missing.max(READ_ROOM_MIN) {
                // Frames already handed out are dropped by now: the buffer is reclaimed.
                self.buf.reserve(missing.max(READ_BUFFER_BYTES));
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

struct FrameHeader {
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

/// Parses a frame header from the front of `buf`; `None` if more bytes are needed.
fn parse_header(buf: &[u8]) -> anyhow::Result<Option<FrameHeader>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = OpCode::from_u8(buf[0] & 0x0f)
        .ok_or_else(|| anyhow::anyhow!("unknown opcode {}", buf[0] & 0x0f))?;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
            10,
        ),
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len > MESSAGE_BYTES_MAX as u64 {
        bail!("frame of {len} bytes is over {MESSAGE_BYTES_MAX}");
    }
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        at += 4;
        Some(buf[at - 4..at].try_into().expect("4 bytes"))
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        header_len: at,
        payload_len: len as usize,
    }))
}

/// Writes frames; see the module doc for the masking.
pub struct FrameWriter<W> {
    io: W,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Writes bytes already encoded by [`encode_frame`] (e.g. a frame built once and
    /// sent many times).
    ///
    /// # Errors
    /// I/O errors.
    pub async fn write_encoded(&mut self, frame: &[u8]) -> io::Result<()> {
        self.io.write_all(frame).await?;
        // A no-op on TCP; over TLS it sends what the session still holds.
        self.io.flush().await
    }

    /// Encodes and writes one text frame.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn send_text(&mut self, text: &[u8]) -> io::Result<()> {
        self.write_encoded(&encode_frame(OpCode::Text, text)).await
    }

    /// Sends a close frame with `code`, best effort.
    pub async fn close(&mut self, code: u16) {
        let frame = encode_frame(OpCode::Close, &code.to_be_bytes());
        let _ = self.io.write_all(&frame).await;
        let _ = self.io.flush().await;
        let _ = self.io.shutdown().await;
    }

    pub async fn send_pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.write_encoded(&encode_frame(OpCode::Pong, payload))
            .await
    }
}

/// One final client frame, masked with the zero key.
pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode as u8);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
    out
}

/// Offset of the first `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    // Every delivery is searched twice (send time, sequence): a comparison per byte
    // offset cost the load generator more CPU per delivery than reading the frame.
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first occurrence, at either end or not at all (markers of a delivery are found
    /// this way, as are header ends).
    #[test]
    fn find_returns_the_first_occurrence() {
        assert_eq!(find(b"ab\r\n\r\ncd\r\n\r\n", b"\r\n\r\n"), Some(2));
        assert_eq!(find(br#""seq":"7""#, br#""seq":""#), Some(0));
        assert_eq!(find(b"xx\"lt_ns\":\"", b"\"lt_ns\":\""), Some(2));
        assert_eq!(find(b"\"lt_ns\"", b"\"seq\":\""), None);
        assert_eq!(find(b"", b"a"), None);
    }

    /// Frames encoded here decode back to the same payload at each length class.
    #[test]
    fn frames_round_trip_at_every_length_encoding() {
        for len in [0, 125, 126, 65_535, 65_536, 1 << 20] {
            let payload = vec![b'a'; len];
            let frame = encode_frame(OpCode::Text, &payload);
            let header = parse_header(&frame).unwrap().unwrap();
            assert!(header.fin);
            assert_eq!(header.opcode, OpCode::Text);
            assert_eq!(header.mask, Some([0; 4]));
            assert_eq!(header.payload_len, len);
            assert_eq!(frame.len(), header.header_len + len);
        }
    }

    /// A header cut short asks for more bytes instead of failing.
    #[test]
    fn partial_headers_need_more_bytes() {
        let frame = encode_frame(OpCode::Binary, &[0; 70_000]);
        for cut in 0..14 {
            assert!(parse_header(&frame[..cut]).unwrap().is_none(), "cut {cut}");
        }
    }

    /// Reassembles fragments and reads a close code from a stream of server frames.
    #[tokio::test]
    async fn reader_reassembles_fragments_and_reads_close_codes() {
        let stream: Vec<u8> = [
            &[0x01, 3][..],
            b"abc",
            &[0x80, 2],
            b"de",
            &[0x88, 2, 0x03, 0xF1],
        ]
        .concat();
        let mut reader = FrameReader {
            io: &stream[..],
            buf: BytesMut::new(),
        };
        let m = reader.next().await.unwrap().unwrap();
        assert_eq!((m.opcode, &m.payload[..]), (OpCode::Text, &b"abcde"[..]));
        let close = reader.next().await.unwrap().unwrap();
        assert_eq!(close.close_code(), Some(1009));
        assert!(reader.next().await.unwrap().is_none());
    }

    /// A stream that serves at most `chunk` bytes per read and records the room each
    /// read was offered.
    struct Chunked {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
        offered: Vec<usize>,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let this = &mut *self;
            this.offered.push(buf.remaining());
            let n = this
                .chunk
                .min(buf.remaining())
                .min(this.data.len() - this.at);
            buf.put_slice(&this.data[this.at..this.at + n]);
            this.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Every read is offered at least `READ_ROOM_MIN` bytes, however many frames were
    /// split off the buffer before it: a read that fills a small remainder costs the
    /// load generator one more syscall for the rest of a batch.
    #[tokio::test]
    async fn every_read_is_offered_room_for_a_batch() {
        let frame = encode_frame(OpCode::Text, &[b'n'; 600]);
        let mut reader = FrameReader {
            io: Chunked {
                data: frame.repeat(200),
                at: 0,
                chunk: 3 * frame.len() + 17,
                offered: Vec::new(),
            },
            buf: BytesMut::with_capacity(READ_BUFFER_BYTES),
        };
        for _ in 0..200 {
            let m = reader.next().await.unwrap().unwrap();
            assert_eq!(m.payload.len(), 600);
        }
        let offered = &reader.io.offered;
        assert!(offered.len() > 30, "{offered:?}");
        let least = offered.iter().min().unwrap();
        assert!(
            *least >= READ_ROOM_MIN,
            "a read was offered {least} bytes: {offered:?}"
        );
    }
}
