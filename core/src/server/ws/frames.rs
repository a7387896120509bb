//! Client frames (RFC 6455 §5), decoded from bytes the connection task
//! has just read into its worker thread's buffer.
//!
//! A connection keeps nothing between frames: only the bytes of a frame
//! that has not fully arrived, or of a message still arriving in fragments,
//! are copied out of the shared buffer. An idle connection therefore holds
//! no read buffer at all (tungstenite's stream kept one per connection,
//! most of an idle connection's memory: BENCHMARKS.md, "Idle connections").
//! Headers are parsed by tungstenite's [`FrameHeader`]; what is checked here
//! is what a server must refuse from a client.

use std::io::Cursor;

use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// The longest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// One message from the client.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Message<'a> {
    /// A complete text message.
    Text(&'a str),
    /// A complete binary message (the protocol has no use for its bytes).
    Binary,
    /// A Ping, with the payload its Pong must carry.
    Ping(&'a [u8]),
    /// A Pong.
    Pong,
    /// A Close, with its code and reason if it had any.
    Close(Option<(u16, &'a str)>),
}

/// Why the client's input was refused; each maps to a close code.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Violation {
    /// Not a valid client frame sequence (1002).
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8 (1007).
    Utf8,
    /// A message longer than `server.max_message_bytes` (1009).
    TooBig,
}

impl Violation {
    /// The close code and reason that answer it.
    pub fn close(&self) -> (u16, &'static str) {
        match self {
            Violation::Protocol(_) => (1002, "protocol error"),
            Violation::Utf8 => (1007, "invalid UTF-8 in a text message"),
            Violation::TooBig => (1009, "message too big"),
        }
    }
}

/// Whether to go on decoding after a message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    /// Decode the next message.
    Continue,
    /// Stop: nothing more is read from this connection.
    Stop,
}

/// A data message arriving in fragments.
#[derive(Debug)]
struct Fragments {
    text: bool,
    payload: Vec<u8>,
}

/// What a connection keeps between reads: usually nothing, so it holds
/// one pointer (a connection's task is its memory, BENCHMARKS.md "Idle
/// connections"), and allocates only while a frame or message is unfinished.
#[derive(Debug, Default)]
pub(super) struct Decoder {
    held: Option<Box<Held>>,
}

/// What an unfinished frame or message leaves between reads.
#[derive(Debug, Default)]
struct Held {
    /// The start of a frame that has not fully arrived.
    partial: Vec<u8>,
    /// The message being assembled from fragments, if any.
    fragments: Option<Fragments>,
}

impl Decoder {
    /// Decodes the bytes just read (unmasking them in place), calling
    /// `on` for each complete message in order, until `on` says stop.
    /// Bytes of an unfinished frame are kept for the next call.
    pub fn feed(
        &mut self,
        input: &mut [u8],
        max_message: usize,
        mut on: impl FnMut(Message<'_>) -> Flow,
    ) -> Result<Flow, Violation> {
        let partial = self
            .held
            .as_mut()
            .map(|held| std::mem::take(&mut held.partial));
        let fed = match partial.filter(|partial| !partial.is_empty()) {
            Some(mut buffered) => {
                // Appended to, and kept, rather than copied again whole:
                // a frame trickled a byte per read would cost its length
                // squared.
                buffered.extend_from_slice(input);
                self.decode(&mut buffered, max_message, &mut on)
                    .map(|(used, flow)| {
                        if flow == Flow::Continue && used < buffered.len() {
                            buffered.drain(..used);
                            self.held.get_or_insert_default().partial = buffered;
                        }
                        flow
                    })
            }
            _ => self.decode_keeping_rest(input, max_message, &mut on),
        };
        if self.held.as_ref().is_some_and(|held| held.is_empty()) {
            self.held = None;
        }
        fed
    }

    /// Decodes `buf` and keeps the start of a frame left at its end.
    fn decode_keeping_rest(
        &mut self,
        buf: &mut [u8],
        max_message: usize,
        on: &mut impl FnMut(Message<'_>) -> Flow,
    ) -> Result<Flow, Violation> {
        let (used, flow) = self.decode(buf, max_message, on)?;
        if flow == Flow::Continue && used < buf.len() {
            self.held.get_or_insert_default().partial = buf[used..].to_vec();
        }
        Ok(flow)
    }

    /// Decodes whole frames from the front of `buf`: the bytes used and
    /// whether to go on.
    fn decode(
        &mut self,
        buf: &mut [u8],
        max_message: usize,
        on: &mut impl FnMut(Message<'_>) -> Flow,
    ) -> Result<(usize, Flow), Violation> {
        let mut at = 0;
        while at < buf.len() {
            let mut cursor = Cursor::new(&buf[at..]);
            let Some((header, length)) = FrameHeader::parse(&mut cursor)
                .map_err(|_| Violation::Protocol("malformed frame header"))?
            else {
                break;
            };
            if length > max_message as u64 {
                return Err(Violation::TooBig);
            }
            let start = at + cursor.position() as usize;
            let end = start + length as usize;
            if end > buf.len() {
                break;
            }
            let payload = &mut buf[start..end];
            let flow = self.frame(&header, payload, max_message, on)?;
            at = end;
            if flow == Flow::Stop {
                return Ok((at, Flow::Stop));
            }
        }
        Ok((at, Flow::Continue))
    }

    /// Handles one complete frame.
    fn frame(
        &mut self,
        header: &FrameHeader,
        payload: &mut [u8],
        max_message: usize,
        on: &mut impl FnMut(Message<'_>) -> Flow,
    ) -> Result<Flow, Violation> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(Violation::Protocol(
                "reserved bits set (no extension was agreed)",
            ));
        }
        let Some(mask) = header.mask else {
            return Err(Violation::Protocol("unmasked frame from a client"));
        };
        unmask(payload, mask);
        match header.opcode {
            OpCode::Control(control) => {
                if !header.is_final || payload.len() as u64 > MAX_CONTROL_PAYLOAD {
                    return Err(Violation::Protocol("fragmented or oversized control frame"));
                }
                control_message(control, payload).map(on)
            }
            OpCode::Data(Data::Continue) => {
                let Some(fragments) = self.fragments_mut() else {
                    return Err(Violation::Protocol("continuation frame without a message"));
                };
                if fragments.payload.len() + payload.len() > max_message {
                    return Err(Violation::TooBig);
                }
                fragments.payload.extend_from_slice(payload);
                if !header.is_final {
                    return Ok(Flow::Continue);
                }
                let Fragments { text, payload } = self.take_fragments().expect("checked above");
                data_message(text, &payload).map(on)
            }
            OpCode::Data(data @ (Data::Text | Data::Binary)) => {
                if self.fragments_mut().is_some() {
                    return Err(Violation::Protocol("new message before the last one ended"));
                }
                let text = data == Data::Text;
                if header.is_final {
                    return data_message(text, payload).map(on);
                }
                self.held.get_or_insert_default().fragments = Some(Fragments {
                    text,
                    payload: payload.to_vec(),
                });
                Ok(Flow::Continue)
            }
            OpCode::Data(Data::Reserved(_)) => Err(Violation::Protocol("reserved opcode")),
        }
    }

    /// The message arriving in fragments, if one is.
    fn fragments_mut(&mut self) -> Option<&mut Fragments> {
        self.held.as_mut()?.fragments.as_mut()
    }

    /// Takes the message arriving in fragments, once its last has come.
    fn take_fragments(&mut self) -> Option<Fragments> {
        self.held.as_mut()?.fragments.take()
    }
}

impl Held {
    /// Whether nothing is unfinished: the decoder lets go of it then.
    fn is_empty(&self) -> bool {
        self.partial.is_empty() && self.fragments.is_none()
    }
}

/// A complete data message.
fn data_message(text: bool, payload: &[u8]) -> Result<Message<'_>, Violation> {
    if !text {
        return Ok(Message::Binary);
    }
    std::str::from_utf8(payload)
        .map(Message::Text)
        .map_err(|_| Violation::Utf8)
}

/// A control frame's message.
fn control_message(control: Control, payload: &[u8]) -> Result<Message<'_>, Violation> {
    match control {
        Control::Ping => Ok(Message::Ping(payload)),
        Control::Pong => Ok(Message::Pong),
        Control::Close => close_message(payload),
        Control::Reserved(_) => Err(Violation::Protocol("reserved opcode")),
    }
}

/// A Close's code and reason (RFC 6455 §5.5.1, §7.4).
fn close_message(payload: &[u8]) -> Result<Message<'_>, Violation> {
    match payload {
        [] => Ok(Message::Close(None)),
        [_] => Err(Violation::Protocol("close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !CloseCode::from(code).is_allowed() {
                return Err(Violation::Protocol("close code not allowed on the wire"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| Violation::Utf8)?;
            Ok(Message::Close(Some((code, reason))))
        }
    }
}

/// Unmasks a client payload in place (RFC 6455 §5.3).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i & 3]));
        out
    }

    /// Feeds `input` in chunks of `chunk` bytes; the messages as strings.
    fn decode_in_chunks(input: &[u8], chunk: usize) -> (Vec<String>, Result<Flow, Violation>) {
        let mut decoder = Decoder::default();
        let mut seen = Vec::new();
        let mut last = Ok(Flow::Continue);
        for piece in input.chunks(chunk) {
            let mut piece = piece.to_vec();
            last = decoder.feed(&mut piece, MAX, |m| {
                let stop = matches!(m, Message::Close(_));
                seen.push(format!("{m:?}"));
                if stop {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            });
            if last != Ok(Flow::Continue) {
                break;
            }
        }
        (seen, last)
    }

    #[test]
    fn messages_decode_whatever_the_chunks_they_arrive_in() {
        let mut input = frame(0x81, br#"{"action":"ping"}"#);
        input.extend(frame(0x89, b"hi"));
        input.extend(frame(0x02, b"bin")); // binary, fragmented
        input.extend(frame(0x80, b"ary"));
        input.extend(frame(0x01, "caf".as_bytes())); // text in three fragments,
        input.extend(frame(0x8A, b"")); // a pong between them,
        input.extend(frame(0x00, &"é".as_bytes()[..1])); // a character split across two
        input.extend(frame(0x80, &"é".as_bytes()[1..]));
        input.extend(frame(0x81, &[b'x'; 300])); // a 16-bit length
        input.extend(frame(0x88, &[0x03, 0xE8, b'b', b'y', b'e']));
        let expected = vec![
            r#"Text("{\"action\":\"ping\"}")"#.to_owned(),
            "Ping([104, 105])".to_owned(),
            "Binary".to_owned(),
            "Pong".to_owned(),
            r#"Text("café")"#.to_owned(),
            format!("Text({:?})", "x".repeat(300)),
            r#"Close(Some((1000, "bye")))"#.to_owned(),
        ];
        for chunk in [1, 2, 3, 7, 64, input.len()] {
            let (seen, last) = decode_in_chunks(&input, chunk);
            assert_eq!(seen, expected, "chunks of {chunk}");
            assert_eq!(last, Ok(Flow::Stop));
        }
    }

    #[test]
    fn nothing_is_kept_between_whole_frames() {
        let mut decoder = Decoder::default();
        let mut input = frame(0x81, b"{}");
        decoder.feed(&mut input, MAX, |_| Flow::Continue).unwrap();
        assert!(decoder.held.is_none());
        let frame = frame(0x81, b"{}");
        decoder
            .feed(&mut frame[..3].to_vec(), MAX, |_| Flow::Continue)
            .unwrap();
        let held = decoder.held.as_ref().expect("an unfinished frame is kept");
        assert_eq!(held.partial.len(), 3);
        decoder
            .feed(&mut frame[3..].to_vec(), MAX, |_| Flow::Continue)
            .unwrap();
        assert!(decoder.held.is_none(), "let go once the frame is whole");
    }

    #[test]
    fn what_a_server_must_refuse_is_refused_with_its_close_code() {
        let protocol = |first: u8, payload: &[u8]| {
            let (_, last) = decode_in_chunks(&frame(first, payload), 1000);
            last.map_err(|v| v.close().0)
        };
        assert_eq!(protocol(0xC1, b"x"), Err(1002), "RSV1 without an extension");
        assert_eq!(protocol(0x83, b"x"), Err(1002), "reserved data opcode");
        assert_eq!(protocol(0x8B, b""), Err(1002), "reserved control opcode");
        assert_eq!(protocol(0x09, b""), Err(1002), "fragmented ping");
        assert_eq!(protocol(0x89, &[0; 126]), Err(1002), "ping over 125 bytes");
        assert_eq!(
            protocol(0x80, b"x"),
            Err(1002),
            "continuation without a start"
        );
        assert_eq!(protocol(0x88, &[3]), Err(1002), "one-byte close payload");
        assert_eq!(protocol(0x88, &[0x03, 0xED]), Err(1002), "close code 1005");
        assert_eq!(
            protocol(0x88, &[0x03, 0xE8, 0xFF]),
            Err(1007),
            "close reason not UTF-8"
        );
        assert_eq!(protocol(0x81, &[0xC3, 0x28]), Err(1007), "text not UTF-8");
        assert_eq!(
            protocol(0x81, &[b'x'; MAX + 1]),
            Err(1009),
            "longer than the bound"
        );
        let mut unmasked = vec![0x81, 0x01, b'x'];
        let got = Decoder::default().feed(&mut unmasked, MAX, |_| Flow::Continue);
        assert_eq!(
            got.map_err(|v| v.close().0),
            Err(1002),
            "unmasked client frame"
        );
        let mut nested = frame(0x01, b"a");
        nested.extend(frame(0x81, b"b"));
        let (_, last) = decode_in_chunks(&nested, 1000);
        assert_eq!(
            last.map_err(|v| v.close().0),
            Err(1002),
            "a message inside a fragmented one"
        );
        let mut long = frame(0x01, &[b'x'; MAX]);
        long.extend(frame(0x80, b"y"));
        let (_, last) = decode_in_chunks(&long, 1000);
        assert_eq!(
            last.map_err(|v| v.close().0),
            Err(1009),
            "fragments adding up past the bound"
        );
    }

    /// A frame trickled in a byte per read is appended to what is kept, not
    /// copied whole again for every byte (which made a 64 KB message sent
    /// a byte at a time cost 2 GB of copying).
    #[test]
    fn a_frame_arriving_a_byte_at_a_time_is_not_copied_again_for_every_byte() {
        const BIG: usize = 65_536;
        let input = frame(0x81, &[b'x'; 60_000]);
        let mut decoder = Decoder::default();
        let mut buffers = 0;
        let mut last = (std::ptr::null(), 0);
        for byte in &input[..input.len() - 1] {
            let fed = decoder.feed(&mut [*byte], BIG, |_| Flow::Continue);
            assert_eq!(fed, Ok(Flow::Continue));
            let partial = &decoder.held.as_ref().expect("unfinished").partial;
            let now = (partial.as_ptr(), partial.capacity());
            if now != last {
                buffers += 1;
                last = now;
            }
        }
        assert!(
            buffers < 100,
            "{buffers} buffers for one frame of {} bytes",
            input.len()
        );
        let mut seen = 0;
        let fed = decoder.feed(&mut [input[input.len() - 1]], BIG, |m| {
            assert_eq!(m, Message::Text(&"x".repeat(60_000)));
            seen += 1;
            Flow::Continue
        });
        assert_eq!((fed, seen), (Ok(Flow::Continue), 1));
        assert!(decoder.held.is_none());
    }

    #[test]
    fn a_too_long_frame_is_refused_from_its_header_before_it_arrives() {
        let header = &frame(0x81, &[b'x'; MAX + 1])[..8];
        let got = Decoder::default().feed(&mut header.to_vec(), MAX, |_| Flow::Continue);
        assert_eq!(got, Err(Violation::TooBig));
    }
}
