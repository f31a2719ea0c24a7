//! WebSocket frames (RFC 6455) after the upgrade: a reader with bounded, lazily grown
//! buffers and a writer that coalesces queued frames into one write.
//!
//! fastwebsockets performs the upgrade; framing is ours because the relay needs what its
//! reader does not offer: a bound on reassembled fragmented messages, a read buffer that
//! shrinks back for idle connections (memory per connection), draining the socket after a
//! close so the peer sees the close frame, and batching many queued frames per syscall.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Smallest and largest amount read from the socket at once, in bytes. An idle connection
/// waits for its next frame with the smallest chunk reserved (the reader cannot learn that
/// bytes are ready without offering room for them), so it is kept to what a typical wallet
/// request needs; busier connections grow it.
const READ_CHUNK_BYTES_MIN: usize = 256;
const READ_CHUNK_BYTES_MAX: usize = 64 * 1024;
/// What `drain` reads at once: small, because every closing connection drains at the same
/// time when the relay shuts down (a 64 KiB chunk each is over a gigabyte at 19,000).
const DRAIN_CHUNK_BYTES: usize = 4 * 1024;
/// Frames `next` returns in a row from bytes already buffered before it gives the rest of
/// its task a turn: a connection whose writer runs in the same task as its reader (see
/// `ws::connection`) then writes the replies to pipelined requests as they come, instead
/// of queueing hundreds of them before writing any.
const FRAMES_IN_A_ROW_MAX: u8 = 16;
/// Complete messages up to this size are copied out of the read buffer rather than split
/// from it (see `take_frame`).
const COPY_PAYLOAD_BYTES_MAX: usize = 1024;
// `FrameReader::lent` counts such a payload in a `u16` (a wider field grew every
// connection's task state).
const _: () = assert!(COPY_PAYLOAD_BYTES_MAX <= u16::MAX as usize);
/// Control frame payloads are at most 125 bytes (RFC 6455 5.5).
const CONTROL_PAYLOAD_BYTES_MAX: usize = 125;

/// Which side of the connection this end is: servers read masked frames and write
/// unmasked ones; clients the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// One complete message or control frame from the other side.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A complete text message, valid UTF-8.
    Text(Bytes),
    Binary,
    Ping(Bytes),
    Pong,
    /// The peer's close frame, with its code if it gave one.
    Close(Option<u16>),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Eof,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("message over {0} bytes")]
    TooBig(usize),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
}

/// Reads frames, reassembling fragmented messages up to `message_bytes_max`.
pub struct FrameReader<R> {
    io: R,
    role: Role,
    buf: BytesMut,
    /// Adapts to traffic: grows while reads fill it, shrinks back when the link idles.
    read_chunk_bytes: usize,
    message_bytes_max: usize,
    /// A text message whose final fragment has not arrived yet.
    partial: Option<BytesMut>,
    /// Frames returned since the socket was last read (see `FRAMES_IN_A_ROW_MAX`).
    frames_in_a_row: u8,
    /// Bytes at the front of `buf` that `next_in_place` lent out (at most
    /// `COPY_PAYLOAD_BYTES_MAX`): consumed when the reader is next used.
    lent: u16,
}

/// What `FrameReader::next_in_place` returns.
#[derive(Debug, PartialEq, Eq)]
pub enum InPlace<'a> {
    /// A complete small text message, still in the read buffer.
    Text(&'a str),
    /// Any other frame, as `next` returns it.
    Frame(Incoming),
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    header_len: usize,
    payload_len: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R, role: Role, message_bytes_max: usize) -> Self {
        FrameReader {
            io,
            role,
            buf: BytesMut::new(),
            read_chunk_bytes: READ_CHUNK_BYTES_MIN,
            message_bytes_max,
            partial: None,
            frames_in_a_row: 0,
            lent: 0,
        }
    }

    /// A reader whose first bytes, `read_ahead`, were already read from `io` by someone
    /// else (the HTTP exchange before the upgrade).
    pub fn with_read_ahead(io: R, role: Role, message_bytes_max: usize, read_ahead: &[u8]) -> Self {
        let mut reader = FrameReader::new(io, role, message_bytes_max);
        reader.buf.extend_from_slice(read_ahead);
        reader
    }

    /// The same reader over a boxed stream, its buffered bytes kept: a connection handed
    /// from one owner to another (see `conn::PeerHandoff`) needs a type both can name.
    pub fn boxed<'io>(self) -> FrameReader<Box<dyn AsyncRead + Send + Unpin + 'io>>
    where
        R: Send + 'io,
    {
        FrameReader {
            io: Box::new(self.io),
            role: self.role,
            buf: self.buf,
            read_chunk_bytes: self.read_chunk_bytes,
            message_bytes_max: self.message_bytes_max,
            partial: self.partial,
            frames_in_a_row: self.frames_in_a_row,
            lent: self.lent,
        }
    }

    /// Changes the message size limit (mesh links carry stamped notifications).
    pub fn set_message_bytes_max(&mut self, message_bytes_max: usize) {
        self.message_bytes_max = message_bytes_max;
    }

    /// The next complete message or control frame.
    ///
    /// Cancel-safe: bytes are only consumed once a whole frame is buffered, so this can
    /// sit in a `select!` beside timers.
    ///
    /// # Errors
    /// End of stream, I/O failure, a message over the limit, a protocol violation or
    /// invalid UTF-8. After an error the reader must not be used except to `drain`.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        self.give_back();
        self.take_turn().await;
        loop {
            let header = self.buffer_frame().await?;
            if let Some(message) = self.take_message(header)? {
                return Ok(message);
            }
        }
    }

    /// As `next`, but a complete small text message (the usual request) is lent from the
    /// read buffer, unmasked and checked in place, instead of copied out of it: the copy
    /// was an allocation and a free per request. It is consumed when the reader is next
    /// used. Cancel-safe, as `next`.
    ///
    /// # Errors
    /// As `next`.
    pub async fn next_in_place(&mut self) -> Result<InPlace<'_>, ReadError> {
        self.give_back();
        self.take_turn().await;
        loop {
            let header = self.buffer_frame().await?;
            let lendable = header.opcode == OP_TEXT
                && header.fin
                && self.partial.is_none()
                && header.payload_len <= COPY_PAYLOAD_BYTES_MAX;
            if lendable {
                // No awaits from here on (cancel safety): the frame is consumed now, its
                // payload when the reader is next used.
                self.buf.advance(header.header_len);
                let payload = &mut self.buf[..header.payload_len];
                if let Some(mask) = header.mask {
                    apply_mask(payload, mask);
                }
                self.lent = header.payload_len as u16;
                self.frames_in_a_row = self.frames_in_a_row.saturating_add(1);
                let text = std::str::from_utf8(&self.buf[..header.payload_len])
                    .map_err(|_| ReadError::InvalidUtf8)?;
                return Ok(InPlace::Text(text));
            }
            if let Some(message) = self.take_message(header)? {
                return Ok(InPlace::Frame(message));
            }
        }
    }

    /// Consumes the buffered frame (`take_frame`): the message it completes, if any.
    fn take_message(&mut self, header: Header) -> Result<Option<Incoming>, ReadError> {
        let message = self.take_frame(header)?;
        self.shrink_when_empty();
        if message.is_some() {
            self.frames_in_a_row = self.frames_in_a_row.saturating_add(1);
        }
        Ok(message)
    }

    /// Consumes what `next_in_place` lent out.
    fn give_back(&mut self) {
        if self.lent > 0 {
            self.buf.advance(usize::from(self.lent));
            self.lent = 0;
            self.shrink_when_empty();
        }
    }

    /// Gives the rest of the task a turn after `FRAMES_IN_A_ROW_MAX` frames in a row.
    async fn take_turn(&mut self) {
        if self.frames_in_a_row >= FRAMES_IN_A_ROW_MAX {
            self.frames_in_a_row = 0;
            tokio::task::yield_now().await;
        }
    }

    fn shrink_when_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > READ_CHUNK_BYTES_MIN {
            // A buffer grown for a busy link is given back; the smallest one is kept,
            // since waiting for the next frame reserves that much again at once.
            self.buf = BytesMut::new();
        }
    }

    /// Reads and discards whatever the peer still sends, for at most `bytes_max` bytes, so
    /// that closing the socket does not reset it before the peer read our close frame.
    pub async fn drain(&mut self, bytes_max: usize) {
        self.give_back();
        // A heap buffer: a stack one would enlarge every connection's task for good.
        let mut total = 0;
        while total < bytes_max {
            self.buf.clear();
            self.buf.reserve(DRAIN_CHUNK_BYTES);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    }

    /// Waits until one whole frame is buffered (checking limits from its header first)
    /// and returns its header, without consuming anything.
    async fn buffer_frame(&mut self) -> Result<Header, ReadError> {
        self.fill(2).await?;
        let (b0, b1) = (self.buf[0], self.buf[1]);
        let masked = b1 & 0x80 != 0;
        let extra = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header_len = 2 + extra + if masked { 4 } else { 0 };
        self.fill(header_len).await?;
        let mut head = &self.buf[2..header_len];
        let payload_len = match extra {
            2 => usize::from(head.get_u16()),
            8 => usize::try_from(head.get_u64()).unwrap_or(usize::MAX),
            _ => usize::from(b1 & 0x7F),
        };
        let mask = masked.then(|| head.get_u32().to_be_bytes());
        let header = Header {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0F,
            mask,
            header_len,
            payload_len,
        };
        self.check(&header, b0, masked)?;
        if header.opcode != OP_BINARY {
            self.fill(header_len + payload_len).await?;
        }
        Ok(header)
    }

    fn check(&self, header: &Header, b0: u8, masked: bool) -> Result<(), ReadError> {
        if b0 & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set"));
        }
        if masked != (self.role == Role::Server) {
            return Err(ReadError::Protocol("wrong masking for this side"));
        }
        let is_control = header.opcode & 0x8 != 0;
        if is_control && (!header.fin || header.payload_len > CONTROL_PAYLOAD_BYTES_MAX) {
            return Err(ReadError::Protocol("invalid control frame"));
        }
        if header.opcode == OP_CONTINUATION && self.partial.is_none() {
            return Err(ReadError::Protocol("continuation without a message"));
        }
        let already = self.partial.as_ref().map_or(0, BytesMut::len);
        if !is_control && already.saturating_add(header.payload_len) > self.message_bytes_max {
            return Err(ReadError::TooBig(self.message_bytes_max));
        }
        Ok(())
    }

    /// Consumes the buffered frame; no awaits from here on (cancel safety).
    fn take_frame(&mut self, header: Header) -> Result<Option<Incoming>, ReadError> {
        if header.opcode == OP_BINARY {
            // Binary is refused whole; its payload is never buffered.
            return Ok(Some(Incoming::Binary));
        }
        self.buf.advance(header.header_len);
        if let Some(mask) = header.mask {
            apply_mask(&mut self.buf[..header.payload_len], mask);
        }
        let last_buffered = self.buf.len() == header.payload_len;
        let payload = if last_buffered && header.fin && header.payload_len <= COPY_PAYLOAD_BYTES_MAX
        {
            // The usual request, alone in the buffer: copied out, so the read buffer stays
            // unshared and is reused for the next frame (splitting it would allocate a
            // shared handle now and a new buffer at the next read: two allocations per
            // message instead of one). Frames with more behind them are split: once the
            // buffer is shared, a split costs no allocation.
            let payload = BytesMut::from(&self.buf[..header.payload_len]);
            self.buf.advance(header.payload_len);
            payload
        } else {
            let payload = self.buf.split_to(header.payload_len);
            if self.buf.is_empty() {
                // What is left shares the payload's allocation, which may be large.
                self.buf = BytesMut::new();
            }
            payload
        };
        match header.opcode {
            OP_TEXT | OP_CONTINUATION => self.assemble(header.opcode, header.fin, payload),
            OP_PING => Ok(Some(Incoming::Ping(payload.freeze()))),
            OP_PONG => Ok(Some(Incoming::Pong)),
            OP_CLOSE => Ok(Some(Incoming::Close(close_code(&payload)))),
            _ => Err(ReadError::Protocol("unknown opcode")),
        }
    }

    fn assemble(
        &mut self,
        opcode: u8,
        fin: bool,
        payload: BytesMut,
    ) -> Result<Option<Incoming>, ReadError> {
        let message = match (opcode, self.partial.take()) {
            (OP_TEXT, Some(_)) => {
                return Err(ReadError::Protocol("new message inside a fragmented one"));
            }
            (OP_TEXT, None) => payload,
            (_, Some(mut partial)) => {
                partial.extend_from_slice(&payload);
                partial
            }
            (_, None) => unreachable!("checked before the payload was read"),
        };
        if !fin {
            self.partial = Some(message);
            return Ok(None);
        }
        std::str::from_utf8(&message).map_err(|_| ReadError::InvalidUtf8)?;
        Ok(Some(Incoming::Text(message.freeze())))
    }

    /// Reads until at least `len` bytes are buffered. Only appends: cancel-safe.
    async fn fill(&mut self, len: usize) -> Result<(), ReadError> {
        while self.buf.len() < len {
            let want = (len - self.buf.len()).max(self.read_chunk_bytes);
            self.buf.reserve(want);
            let spare = self.buf.capacity() - self.buf.len();
            let n = self.io.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(ReadError::Eof);
            }
            self.frames_in_a_row = 0;
            self.read_chunk_bytes = if n >= spare {
                (self.read_chunk_bytes * 2).min(READ_CHUNK_BYTES_MAX)
            } else {
                (self.read_chunk_bytes / 2).max(READ_CHUNK_BYTES_MIN)
            };
        }
        Ok(())
    }
}

fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// XORs the payload with the 4-byte masking key, eight bytes at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("8-byte chunk")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let done = data.len() - data.len() % 8;
    for (i, byte) in data[done..].iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// The kinds of frame the relay sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Text,
    Ping,
    Pong,
    Close,
}

impl FrameKind {
    fn opcode(self) -> u8 {
        match self {
            FrameKind::Text => OP_TEXT,
            FrameKind::Ping => OP_PING,
            FrameKind::Pong => OP_PONG,
            FrameKind::Close => OP_CLOSE,
        }
    }
}

/// The payload of a close frame: the code, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    // Control payloads are at most 125 bytes; reasons are ours and short, but stay safe.
    let mut end = reason.len().min(CONTROL_PAYLOAD_BYTES_MAX - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    payload
}

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const HEADER_BYTES_MAX: usize = 14;
/// Payloads at least this large are written straight from their buffer, not copied.
const COPY_BYTES_MAX: usize = 16 * 1024;
/// The most `reserve_batch` reserves ahead (below the allocator's default threshold for
/// mapping memory: a larger batch grows as it is written).
const BATCH_RESERVE_BYTES_MAX: usize = 64 * 1024;
/// Payloads up to this size, alone in a write, are encoded on the stack (`write_lone`).
const LONE_PAYLOAD_BYTES_MAX: usize = 512;
/// Payloads up to this size (pongs, acks, most replies) take a smaller array: the array is
/// zeroed on every write, and zeroing 512 bytes was 1 % of a ping's round trip.
const SHORT_PAYLOAD_BYTES_MAX: usize = 114;
/// Coalesced bytes after which the writer flushes even if more frames are queued.
const BATCH_BYTES_MAX: usize = 256 * 1024;

/// Encodes frames into one buffer and writes them together.
pub struct FrameWriter<W> {
    io: W,
    role: Role,
    buf: Vec<u8>,
    /// Source of masking keys for the client role.
    next_mask: u32,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(io: W, role: Role, mask_seed: u32) -> Self {
        FrameWriter {
            io,
            role,
            buf: Vec::new(),
            next_mask: mask_seed | 1,
        }
    }

    /// Makes room for `frames` more frames of `bytes` payload in all, at once, when they
    /// are small enough to be copied into one batch: grown frame by frame, a batch of six
    /// notifications cost three reallocations, each copying what was already batched.
    pub fn reserve_batch(&mut self, frames: usize, bytes: usize) {
        let wanted = bytes.saturating_add(frames.saturating_mul(HEADER_BYTES_MAX));
        if wanted <= BATCH_RESERVE_BYTES_MAX {
            self.buf.reserve(wanted);
        }
    }

    /// True when enough is buffered that the caller should `flush` before adding more.
    pub fn batch_full(&self) -> bool {
        self.buf.len() >= BATCH_BYTES_MAX
    }

    /// Adds a frame to the batch; large payloads are written through at once.
    ///
    /// # Errors
    /// The write failed.
    pub async fn push(&mut self, kind: FrameKind, payload: &[u8]) -> std::io::Result<()> {
        let mask = (self.role == Role::Client).then(|| self.mask_key());
        let copied = mask.is_some() || payload.len() < COPY_BYTES_MAX;
        // Room for the whole frame at once: growing the batch from empty for the header,
        // then again for the payload, cost two allocations per reply instead of one.
        self.buf
            .reserve(HEADER_BYTES_MAX + if copied { payload.len() } else { 0 });
        write_header(&mut self.buf, kind.opcode(), payload.len(), mask);
        match mask {
            Some(mask) => {
                let start = self.buf.len();
                self.buf.extend_from_slice(payload);
                apply_mask(&mut self.buf[start..], mask);
            }
            None if payload.len() >= COPY_BYTES_MAX => {
                // What is batched and the payload go out together (one vectored write
                // where the stream supports it), not the header in a segment of its own.
                let mut both = Buf::chain(self.buf.as_slice(), payload);
                self.io.write_all_buf(&mut both).await?;
                self.buf.clear();
            }
            None => self.buf.extend_from_slice(payload),
        }
        Ok(())
    }

    /// Writes one frame that has nothing batched before it and nothing queued behind it
    /// (the usual reply or delivery). A small one is encoded on the stack and written from
    /// there: batching it cost an allocation and a free per frame. What the socket does not
    /// take at once is batched and flushed as usual.
    ///
    /// # Errors
    /// The write failed.
    pub async fn write_lone(&mut self, kind: FrameKind, payload: &[u8]) -> std::io::Result<()> {
        if self.buf.is_empty() && payload.len() <= LONE_PAYLOAD_BYTES_MAX {
            std::future::poll_fn(|cx| {
                if payload.len() <= SHORT_PAYLOAD_BYTES_MAX {
                    self.poll_write_lone::<{ HEADER_BYTES_MAX + SHORT_PAYLOAD_BYTES_MAX }>(
                        cx, kind, payload,
                    )
                } else {
                    self.poll_write_lone::<{ HEADER_BYTES_MAX + LONE_PAYLOAD_BYTES_MAX }>(
                        cx, kind, payload,
                    )
                }
            })
            .await?;
        } else {
            self.push(kind, payload).await?;
        }
        self.flush().await
    }

    /// Encodes a frame in an array of `N` bytes on the stack of this poll only (the
    /// connection's state does not hold it) and writes it; what the socket does not take
    /// is batched.
    fn poll_write_lone<const N: usize>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        kind: FrameKind,
        payload: &[u8],
    ) -> std::task::Poll<std::io::Result<()>> {
        let mut frame = [0u8; N];
        let len = self.encode_into(&mut frame, kind, payload);
        let taken = match std::pin::Pin::new(&mut self.io).poll_write(cx, &frame[..len]) {
            std::task::Poll::Ready(Ok(taken)) => taken,
            std::task::Poll::Ready(Err(error)) => return std::task::Poll::Ready(Err(error)),
            // The socket is full: the frame waits in the batch (the waker is set).
            std::task::Poll::Pending => 0,
        };
        self.buf.extend_from_slice(&frame[taken..len]);
        std::task::Poll::Ready(Ok(()))
    }

    /// Encodes one frame (header, masked payload for a client) at the start of `out`, which
    /// has room for it; returns its length.
    fn encode_into(&mut self, out: &mut [u8], kind: FrameKind, payload: &[u8]) -> usize {
        let mask = (self.role == Role::Client).then(|| self.mask_key());
        let room = out.len();
        let mut rest = &mut out[..];
        write_header(&mut rest, kind.opcode(), payload.len(), mask);
        let start = room - rest.len();
        let end = start + payload.len();
        out[start..end].copy_from_slice(payload);
        if let Some(mask) = mask {
            apply_mask(&mut out[start..end], mask);
        }
        end
    }

    /// Writes everything batched.
    ///
    /// # Errors
    /// The write failed.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.io.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.io.flush().await?;
        // Idle connections keep no write buffer; one allocation per batch is far cheaper
        // than the write it accompanies.
        self.buf = Vec::new();
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }

    fn mask_key(&mut self) -> [u8; 4] {
        // xorshift32: masking only has to defeat proxy cache poisoning, not be secret.
        let mut x = self.next_mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.next_mask = x;
        x.to_be_bytes()
    }
}

fn write_header(buf: &mut impl BufMut, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    buf.put_u8(0x80 | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match len {
        0..=125 => buf.put_u8(mask_bit | len as u8),
        126..=0xFFFF => {
            buf.put_u8(mask_bit | 126);
            buf.put_u16(len as u16);
        }
        _ => {
            buf.put_u8(mask_bit | 127);
            buf.put_u64(len as u64);
        }
    }
    if let Some(mask) = mask {
        buf.put_slice(&mask);
    }
}

#[cfg(test)]
mod tests;
