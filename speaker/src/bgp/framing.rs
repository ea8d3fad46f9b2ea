//! Splitting the bytes read from a router into BGP messages (pure).

use bytes::{Buf, BytesMut};
use rustbgpd_wire::{DecodeError, MAX_MESSAGE_LEN, Message, decode_message, peek_message_length};

/// The complete messages at the front of `buffer`, removed from it; a partial message stays for
/// the next read. A malformed message ends the list with its error and empties the buffer (the
/// session is over: nothing after it can be framed).
pub fn split_messages(buffer: &mut BytesMut) -> (Vec<Message>, Option<DecodeError>) {
    let mut messages = Vec::new();
    loop {
        match peek_message_length(buffer, MAX_MESSAGE_LEN) {
            Ok(Some(len)) if buffer.len() >= usize::from(len) => {
                let mut frame = buffer.split_to(usize::from(len)).freeze();
                match decode_message(&mut frame, MAX_MESSAGE_LEN) {
                    Ok(m) => messages.push(m),
                    Err(e) => {
                        buffer.clear();
                        return (messages, Some(e));
                    }
                }
            }
            Ok(_) => return (messages, None),
            Err(e) => {
                buffer.advance(buffer.len());
                return (messages, Some(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rustbgpd_wire::encode_message;

    use super::*;

    #[test]
    fn whole_messages_come_out_and_partial_ones_wait() {
        let keepalive = encode_message(&Message::Keepalive).unwrap();
        let mut buffer = BytesMut::new();
        buffer.extend_from_slice(&keepalive);
        buffer.extend_from_slice(&keepalive);
        buffer.extend_from_slice(&keepalive[..10]);
        let (messages, error) = split_messages(&mut buffer);
        assert_eq!(messages, [Message::Keepalive, Message::Keepalive]);
        assert!(error.is_none());
        assert_eq!(buffer.len(), 10);
        buffer.extend_from_slice(&keepalive[10..]);
        assert_eq!(split_messages(&mut buffer).0, [Message::Keepalive]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn garbage_ends_the_stream_with_the_error() {
        let mut buffer = BytesMut::from(&[0u8; 40][..]);
        let (messages, error) = split_messages(&mut buffer);
        assert!(messages.is_empty());
        assert_eq!(error, Some(DecodeError::InvalidMarker));
        assert!(buffer.is_empty());
        // A valid header announcing a KEEPALIVE of the wrong length.
        let mut bad = vec![0xffu8; 16];
        bad.extend_from_slice(&[0, 20, 4, 0]);
        let (_, error) = split_messages(&mut BytesMut::from(&bad[..]));
        assert!(error.is_some());
    }
}
