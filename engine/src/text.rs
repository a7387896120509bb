//! [`Text`]: the bytes of one JSON message, known to be UTF-8 and shared by
//! every recipient. An event is serialized once; queueing it for one more
//! connection or sink costs a reference count, and the transport writes the
//! same bytes to every socket (ARCHITECTURE.md, "Serialize once").
//!
//! It is `bytestring`'s `ByteString` (UTF-8 over `bytes::Bytes`), not a
//! WebSocket library's type, so the engine carries no transport.

/// Shared, immutable UTF-8 text: `Deref<Target = str>`, cheap to clone.
pub type Text = bytestring::ByteString;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_buffer() {
        let a = Text::from(String::from("{\"type\":\"x\"}"));
        let b = a.clone();
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
        assert_eq!(&*b, "{\"type\":\"x\"}");
        assert_eq!(b.to_string(), "{\"type\":\"x\"}");
    }
}
