//! The ClientHello sniff: TLS told from raw arpc and HTTP by the first bytes.

use super::{SNIFF_LEN, Sniff, sniff};

/// A real ClientHello's first bytes (record of 0x00c8 bytes, ClientHello of 0x0000c4).
const HELLO: [u8; SNIFF_LEN] = [0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4];

#[test]
fn a_client_hello_is_tls_once_nine_bytes_are_in() {
    for n in 0..SNIFF_LEN {
        assert_eq!(sniff(&HELLO[..n]), Sniff::NeedMore, "{n} bytes");
    }
    assert_eq!(sniff(&HELLO), Sniff::Tls);
}

#[test]
fn http_and_small_arpc_frames_are_plain_at_once() {
    assert_eq!(sniff(b"G"), Sniff::Plain);
    assert_eq!(sniff(b"GET / HTTP/1.1"), Sniff::Plain);
    // An arpc Request of 790 bytes: 16 03 00 00 ...
    assert_eq!(sniff(&[0x16, 0x03, 0x00, 0x00, 0, 1]), Sniff::Plain);
}

/// Every arpc Request header under 16 MiB whose first bytes look like a handshake record
/// (body 0x0?010316..) is still plaintext: its method length would have to be 0.
#[test]
fn no_valid_arpc_first_frame_under_16_mib_is_taken_for_tls() {
    for third in 1..=3u8 {
        for user_flags in 0..=255u8 {
            for method_len in 1..=127u8 {
                for seq_low in [0u8, 0xc4, 0xff] {
                    let header = [
                        0x16, 0x03, third, 0x00, user_flags, 0x01, 0x00, method_len, seq_low,
                    ];
                    assert_eq!(sniff(&header), Sniff::Plain, "{header:?}");
                }
            }
        }
    }
}
