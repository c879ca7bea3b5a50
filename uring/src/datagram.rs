//! Datagrams: [`Datagram`], one message a multishot `recvmsg` delivered into a receive buffer,
//! and the socket-address and control-message memory a `send_to` hands the kernel.
//!
//! Invariants:
//! - The layout the kernel writes into a buffer selected by multishot `recvmsg` (kernel ≥ 6.0)
//!   is `io_uring_recvmsg_out` (four native-endian `u32`: name length, control length,
//!   payload length, flags), then a name field of exactly the template's `msg_namelen`
//!   ([`NAME_FIELD`] bytes), then a control field of the template's `msg_controllen` (0 here),
//!   then as much payload as fits. [`Layout::parse`] reads that layout from the initialised
//!   bytes of a [`RecvBuf`] with safe, bounds-checked slicing only: a header or name the buffer
//!   cannot hold yields `None`, never an out-of-range read.
//! - A [`Datagram`] owns its [`RecvBuf`]; the payload and peer it exposes borrow that buffer,
//!   so the buffer goes back to the kernel only when the `Datagram` (and every borrow) is gone.
//! - The memory a `send_to` passes ([`SockAddr`], [`GsoControl`]) is built here with safe code
//!   and owned by the op record, next to its `msghdr`, until the final completion.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;

use crate::RecvBuf;

/// Size of `io_uring_recvmsg_out`, the header the kernel writes first.
const HEADER: usize = 16;
/// The name field: `msg_namelen` of the recvmsg template, room for any socket address.
pub(crate) const NAME_FIELD: usize = size_of::<libc::sockaddr_storage>();
/// Smallest receive buffer multishot `recvmsg` can use: header and name field, no payload.
pub(crate) const MIN_BUFFER: usize = HEADER + NAME_FIELD;

/// Where the parts of one `recvmsg` result lie in its buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Layout {
    name: Range<usize>,
    payload: Range<usize>,
    payload_len: u32,
    flags: u32,
}

impl Layout {
    /// Reads the layout from the `bytes` the kernel wrote (a template with a [`NAME_FIELD`]
    /// name and no control field). `None` if the bytes cannot hold the header and the name
    /// field the kernel reserves, or the header claims control data that was not asked for.
    fn parse(bytes: &[u8]) -> Option<Layout> {
        let word = |i: usize| -> Option<u32> {
            let b = bytes.get(i * 4..i * 4 + 4)?;
            Some(u32::from_ne_bytes(b.try_into().ok()?))
        };
        let (namelen, controllen, payload_len, flags) = (word(0)?, word(1)?, word(2)?, word(3)?);
        if controllen != 0 || bytes.len() < MIN_BUFFER {
            return None;
        }
        let name_len = (namelen as usize).min(NAME_FIELD);
        let available = bytes.len() - MIN_BUFFER;
        let payload_end = MIN_BUFFER + (payload_len as usize).min(available);
        Some(Layout {
            name: HEADER..HEADER + name_len,
            payload: MIN_BUFFER..payload_end,
            payload_len,
            flags,
        })
    }
}

/// Decodes a `sockaddr_in`/`sockaddr_in6` from the bytes of a name field; `None` for any other
/// family or a name too short for its family.
fn decode_addr(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(name.get(0..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            // As std decodes it: flowinfo and scope id as the kernel stores them.
            let flowinfo = u32::from_ne_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope_id = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flowinfo,
                scope_id,
            )))
        }
        _ => None,
    }
}

/// One datagram a [`Ring::recvmsg_multi`](crate::Ring::recvmsg_multi) received: the sender's
/// address and the payload, in the receive buffer it owns.
///
/// Dropping it gives the buffer back to the kernel, as dropping a [`RecvBuf`] does. Not `Clone`.
pub struct Datagram {
    buf: RecvBuf,
    layout: Layout,
}

impl Datagram {
    /// Parses the buffer of a `recvmsg` completion; gives the buffer back if its header is
    /// malformed.
    pub(crate) fn parse(buf: RecvBuf) -> Result<Datagram, RecvBuf> {
        match Layout::parse(&buf) {
            Some(layout) => Ok(Datagram { buf, layout }),
            None => Err(buf),
        }
    }

    /// The sender's address: IPv4 or IPv6; `None` for any other address family (or none).
    pub fn peer(&self) -> Option<SocketAddr> {
        decode_addr(&self.buf[self.layout.name.clone()])
    }

    /// The payload bytes received: all of the datagram, or its first bytes if it
    /// [`is_truncated`](Datagram::is_truncated).
    pub fn payload(&self) -> &[u8] {
        &self.buf[self.layout.payload.clone()]
    }

    /// Whether the datagram was larger than the receive buffer could hold after the header
    /// and name (`MSG_TRUNC` in the kernel's flags); the rest of it is lost.
    pub fn is_truncated(&self) -> bool {
        self.layout.flags & libc::MSG_TRUNC as u32 != 0
    }

    /// The datagram's full payload length as sent (larger than `payload().len()` when
    /// truncated).
    pub fn original_len(&self) -> usize {
        self.layout.payload_len as usize
    }

    /// The receive buffer's id (for diagnostics).
    pub fn buffer_id(&self) -> u16 {
        self.buf.buffer_id()
    }
}

impl fmt::Debug for Datagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datagram")
            .field("peer", &self.peer())
            .field("len", &self.payload().len())
            .field("truncated", &self.is_truncated())
            .field("bid", &self.buf.buffer_id())
            .finish()
    }
}

/// A socket address in the kernel's layout, built without `unsafe`: a union of the two
/// families, so that a pointer to it is a valid `msg_name` of [`SockAddr::len`] bytes.
#[repr(C)]
pub(crate) union SockAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl SockAddr {
    /// Encodes `addr` and returns it with its length in bytes.
    pub(crate) fn new(addr: SocketAddr) -> (SockAddr, libc::socklen_t) {
        match addr {
            SocketAddr::V4(a) => (
                SockAddr {
                    v4: libc::sockaddr_in {
                        sin_family: libc::AF_INET as libc::sa_family_t,
                        sin_port: a.port().to_be(),
                        sin_addr: libc::in_addr {
                            s_addr: u32::from_ne_bytes(a.ip().octets()),
                        },
                        sin_zero: [0; 8],
                    },
                },
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            SocketAddr::V6(a) => (
                SockAddr {
                    v6: libc::sockaddr_in6 {
                        sin6_family: libc::AF_INET6 as libc::sa_family_t,
                        sin6_port: a.port().to_be(),
                        sin6_flowinfo: a.flowinfo(),
                        sin6_addr: libc::in6_addr {
                            s6_addr: a.ip().octets(),
                        },
                        sin6_scope_id: a.scope_id(),
                    },
                },
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// The one control message of a UDP GSO send: `SOL_UDP`/`UDP_SEGMENT` with a `u16` segment
/// size, laid out as `CMSG_SPACE(2)` bytes.
#[repr(C)]
pub(crate) struct GsoControl {
    hdr: libc::cmsghdr,
    data: [u8; 8],
}

// SAFETY: CMSG_LEN and CMSG_SPACE are pure arithmetic on their argument.
const GSO_CMSG_LEN: u32 = unsafe { libc::CMSG_LEN(2) };
// SAFETY: as above.
const GSO_CMSG_SPACE: u32 = unsafe { libc::CMSG_SPACE(2) };
const _: () = assert!(size_of::<GsoControl>() == GSO_CMSG_SPACE as usize);
const _: () = assert!(GSO_CMSG_LEN as usize == size_of::<libc::cmsghdr>() + 2);

impl GsoControl {
    /// The control message asking the kernel to split the send into `segment_size`-byte
    /// datagrams (Linux ≥ 4.18).
    pub(crate) fn new(segment_size: u16) -> GsoControl {
        // SAFETY: cmsghdr is plain old data; all-zero is valid (some libcs have private
        // padding fields, so no struct literal).
        let mut hdr: libc::cmsghdr = unsafe { std::mem::zeroed() };
        hdr.cmsg_len = GSO_CMSG_LEN as _;
        hdr.cmsg_level = libc::SOL_UDP;
        hdr.cmsg_type = UDP_SEGMENT;
        let mut data = [0u8; 8];
        data[..2].copy_from_slice(&segment_size.to_ne_bytes());
        GsoControl { hdr, data }
    }

    /// `msg_controllen` for this control buffer.
    pub(crate) const LEN: usize = GSO_CMSG_SPACE as usize;
}

/// `UDP_SEGMENT` from `<linux/udp.h>` (libc exports it only for some targets).
const UDP_SEGMENT: libc::c_int = 103;

#[cfg(test)]
mod tests {
    use super::*;

    fn result(
        namelen: u32,
        controllen: u32,
        payloadlen: u32,
        flags: u32,
        name: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [namelen, controllen, payloadlen, flags] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        let mut field = vec![0u8; NAME_FIELD];
        field[..name.len()].copy_from_slice(name);
        b.extend_from_slice(&field);
        b.extend_from_slice(payload);
        b
    }

    /// A sockaddr in the kernel's layout, written independently of `SockAddr`.
    fn name_of(addr: SocketAddr) -> Vec<u8> {
        let mut b = Vec::new();
        match addr {
            SocketAddr::V4(a) => {
                b.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                b.extend_from_slice(&a.port().to_be_bytes());
                b.extend_from_slice(&a.ip().octets());
                b.extend_from_slice(&[0; 8]);
            }
            SocketAddr::V6(a) => {
                b.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
                b.extend_from_slice(&a.port().to_be_bytes());
                b.extend_from_slice(&a.flowinfo().to_ne_bytes());
                b.extend_from_slice(&a.ip().octets());
                b.extend_from_slice(&a.scope_id().to_ne_bytes());
            }
        }
        b
    }

    #[test]
    fn parses_v4_and_v6_names_and_payload() {
        for addr in ["127.0.0.1:4242", "[::1]:7", "[fe80::1%3]:65535"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let name = name_of(addr);
            let bytes = result(name.len() as u32, 0, 3, 0, &name, b"abc");
            let l = Layout::parse(&bytes).unwrap();
            assert_eq!(decode_addr(&bytes[l.name.clone()]), Some(addr));
            assert_eq!(&bytes[l.payload.clone()], b"abc");
        }
    }

    #[test]
    fn truncation_and_malformed_headers_never_read_out_of_bounds() {
        let name = name_of("10.0.0.1:1".parse().unwrap());
        // Payload claimed larger than what is present: clipped to the buffer.
        let bytes = result(16, 0, 5000, libc::MSG_TRUNC as u32, &name, b"xy");
        let l = Layout::parse(&bytes).unwrap();
        assert_eq!((l.payload.len(), l.payload_len), (2, 5000));
        // Too short for the header, or for the name field.
        assert_eq!(Layout::parse(&bytes[..10]), None);
        assert_eq!(Layout::parse(&bytes[..MIN_BUFFER - 1]), None);
        // Control data that was never asked for.
        assert_eq!(Layout::parse(&result(16, 8, 0, 0, &name, b"")), None);
        // A huge name length is clipped to the field; unknown or short families decode to None.
        let bytes = result(u32::MAX, 0, 0, 0, &name, b"");
        let l = Layout::parse(&bytes).unwrap();
        assert_eq!(l.name.len(), NAME_FIELD);
        assert_eq!(decode_addr(&[]), None);
        assert_eq!(decode_addr(&name[..7]), None);
        let unix = (libc::AF_UNIX as u16).to_ne_bytes();
        assert_eq!(decode_addr(&[unix[0], unix[1], 0, 0, 0, 0, 0, 0]), None);
    }
}
