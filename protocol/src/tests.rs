use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn golden_echo_request_decodes_and_encodes() {
    let wire = hex("0a000000 00 01 00 05 0200000000000000 2f6563686f 68656c6c6f");
    let mut buf = BytesMut::from(&wire[..]);
    let frame = Decoder::default().decode(&mut buf).unwrap().unwrap();
    assert!(buf.is_empty());
    assert_eq!(frame.header.cmd, Command::Request);
    assert_eq!(frame.header.seq, 2);
    assert_eq!(&frame.method[..], b"/echo");
    assert_eq!(&frame.payload[..], b"hello");
    assert_eq!(&Frame::request(2, "/echo", "hello").to_bytes()[..], &wire[..]);
}
