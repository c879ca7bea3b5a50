//! The 16-byte frame header: its [`Command`] and [`Flags`], the validated [`Header`], and
//! [`DecodeError`], every reason bytes are refused.
//!
//! Invariant: a [`Header`] only exists validated ([`Header::parse`]): a known command, a body
//! within the limit, a method length its command allows and that fits in the body.

use std::fmt;

use crate::gzip;
use crate::{CMD_MASK, CMD_STREAM_EOF, CMD_STREAM_LOCAL, HEADER_LEN, MAX_METHOD_LEN};

/// Frame command (low six bits of the `cmd` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    /// A call that expects a Response with the same `seq`.
    Request = 1,
    /// The answer to a Request.
    Response = 2,
    /// A one-way message; never answered.
    Notify = 3,
    /// Liveness probe; answered with Pong.
    Ping = 4,
    /// Answer to Ping.
    Pong = 5,
    /// A frame of a stream (see the stream bits).
    Stream = 6,
}

impl Command {
    /// Parses the low six bits of a `cmd` byte.
    pub fn from_bits(bits: u8) -> Option<Command> {
        Some(match bits & CMD_MASK {
            1 => Command::Request,
            2 => Command::Response,
            3 => Command::Notify,
            4 => Command::Ping,
            5 => Command::Pong,
            6 => Command::Stream,
            _ => return None,
        })
    }

    /// Whether frames of this command must name a method (length 1..=127).
    pub fn needs_method(self) -> bool {
        matches!(self, Command::Request | Command::Notify | Command::Stream)
    }

    /// Whether frames of this command are bare 16-byte headers.
    pub fn is_control(self) -> bool {
        matches!(self, Command::Ping | Command::Pong)
    }
}

/// The `flag` byte: error and async bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u8);

impl Flags {
    /// The Response carries an error text as its payload.
    pub const ERROR: u8 = 0x01;
    /// The call was made asynchronously (echoed back in its Response).
    pub const ASYNC: u8 = 0x02;

    /// Whether the error bit is set.
    pub fn is_error(self) -> bool {
        self.0 & Self::ERROR != 0
    }
    /// Whether the async bit is set.
    pub fn is_async(self) -> bool {
        self.0 & Self::ASYNC != 0
    }
    /// Returns these flags with the error bit set.
    pub fn with_error(self) -> Flags {
        Flags(self.0 | Self::ERROR)
    }
}

/// A validated frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Method length plus payload length (frame length minus 16).
    pub body_len: u32,
    /// Eight application-defined bits (arpc's reserved byte).
    pub user_flags: u8,
    /// The command.
    pub cmd: Command,
    /// Stream bit 7: stream opened by the local side.
    pub stream_local: bool,
    /// Stream bit 6: end of stream.
    pub stream_eof: bool,
    /// Error and async bits.
    pub flags: Flags,
    /// Length of the method name that follows the header.
    pub method_len: u8,
    /// Sequence number; a Response echoes its Request's.
    pub seq: u64,
}

impl Header {
    /// Parses and validates a header against `max_body`.
    ///
    /// Every check that can reject a frame happens here, before the body is read, so a
    /// hostile length is refused without reserving memory for it.
    pub fn parse(bytes: &[u8; HEADER_LEN], max_body: u32) -> Result<Header, DecodeError> {
        let body_len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let user_flags = bytes[4];
        let cmd_byte = bytes[5];
        let flag = bytes[6];
        let method_len = bytes[7];
        let seq = u64::from_le_bytes([
            bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
        ]);
        let cmd = Command::from_bits(cmd_byte).ok_or(DecodeError::UnknownCommand(cmd_byte))?;
        if body_len > max_body {
            return Err(DecodeError::BodyTooLarge {
                declared: body_len,
                max: max_body,
            });
        }
        // No command may carry a method longer than 127 bytes (a Response echoes its
        // Request's), so every decoded frame can be re-encoded.
        let method_ok = if cmd.needs_method() {
            (1..=MAX_METHOD_LEN).contains(&(method_len as usize))
        } else {
            method_len as usize <= MAX_METHOD_LEN
        };
        if !method_ok {
            return Err(DecodeError::BadMethodLen {
                cmd,
                len: method_len,
            });
        }
        if cmd.is_control() && (body_len != 0 || method_len != 0) {
            return Err(DecodeError::ControlFrameWithBody { cmd });
        }
        if (method_len as u32) > body_len {
            return Err(DecodeError::MethodLongerThanBody {
                method_len,
                body_len,
            });
        }
        Ok(Header {
            body_len,
            user_flags,
            cmd,
            stream_local: cmd_byte & CMD_STREAM_LOCAL != 0,
            stream_eof: cmd_byte & CMD_STREAM_EOF != 0,
            flags: Flags(flag),
            method_len,
            seq,
        })
    }

    /// Total length of the frame this header starts.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }

    /// Length of the payload after the method.
    pub fn payload_len(&self) -> usize {
        self.body_len as usize - self.method_len as usize
    }

    /// The raw `cmd` byte: command bits plus stream bits.
    pub fn cmd_byte(&self) -> u8 {
        let mut b = self.cmd as u8;
        if self.stream_local {
            b |= CMD_STREAM_LOCAL;
        }
        if self.stream_eof {
            b |= CMD_STREAM_EOF;
        }
        b
    }

    /// Writes the 16 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&self.body_len.to_le_bytes());
        out[4] = self.user_flags;
        out[5] = self.cmd_byte();
        out[6] = self.flags.0;
        out[7] = self.method_len;
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out
    }
}

/// Why bytes could not be decoded; the connection that sent them should be closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The command bits name no known command (0 or 7..=63).
    UnknownCommand(u8),
    /// The declared body is longer than the configured maximum.
    BodyTooLarge {
        /// `body_len` from the header.
        declared: u32,
        /// The limit in force.
        max: u32,
    },
    /// A Request, Notify or Stream frame whose method length is not 1..=127, or any frame
    /// whose method is longer than 127 bytes.
    BadMethodLen {
        /// The frame's command.
        cmd: Command,
        /// The declared method length.
        len: u8,
    },
    /// A Ping or Pong that is not a bare header.
    ControlFrameWithBody {
        /// Ping or Pong.
        cmd: Command,
    },
    /// `method_len` exceeds `body_len`.
    MethodLongerThanBody {
        /// The declared method length.
        method_len: u8,
        /// The declared body length.
        body_len: u32,
    },
    /// A gzip-compressed frame ([`gzip::USER_FLAG_GZIP`]) that could not be inflated:
    /// corrupt gzip data, or a body that inflates past the limit (a zip bomb).
    Gzip(gzip::GzipError),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownCommand(b) => {
                write!(f, "unknown command {} (cmd byte {b:#04x})", b & CMD_MASK)
            }
            DecodeError::BodyTooLarge { declared, max } => {
                write!(
                    f,
                    "declared body of {declared} bytes exceeds the maximum of {max}"
                )
            }
            DecodeError::BadMethodLen { cmd, len } => {
                write!(
                    f,
                    "{cmd:?} frame with method length {len} (must be 1..={MAX_METHOD_LEN})"
                )
            }
            DecodeError::ControlFrameWithBody { cmd } => {
                write!(f, "{cmd:?} frame must be a bare 16-byte header")
            }
            DecodeError::MethodLongerThanBody {
                method_len,
                body_len,
            } => {
                write!(
                    f,
                    "method length {method_len} exceeds body length {body_len}"
                )
            }
            DecodeError::Gzip(e) => write!(f, "gzip-compressed frame: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Gzip(e) => Some(e),
            _ => None,
        }
    }
}
