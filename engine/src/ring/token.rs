//! Op tokens: what a completion belongs to, packed into the 64-bit `user_data`.
//!
//! Layout: `kind` in bits 56..64, connection generation in bits 32..56, slab slot in bits 0..32.
//! The generation lets a completion for a closed connection be recognised and dropped even
//! after its slot was reused.

/// What kind of operation a completion finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    /// Multishot accept on the reactor's listener.
    Accept = 1,
    /// Multishot recv on a connection.
    Recv = 2,
    /// A vectored send on a connection (slot = the ring's in-flight send id).
    Send = 3,
    /// Read of the reactor's wake-up eventfd.
    Wake = 4,
    /// A timer (slot says which).
    Timer = 5,
    /// A cancel request; its own completion carries nothing of interest.
    Cancel = 6,
}

impl OpKind {
    fn from_u8(v: u8) -> Option<OpKind> {
        Some(match v {
            1 => OpKind::Accept,
            2 => OpKind::Recv,
            3 => OpKind::Send,
            4 => OpKind::Wake,
            5 => OpKind::Timer,
            6 => OpKind::Cancel,
            _ => return None,
        })
    }
}

/// Generations wrap at 24 bits; a stale completion needs 16M reuses of one slot to alias.
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

/// A decoded `user_data` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    /// Which operation finished.
    pub kind: OpKind,
    /// Generation of the connection the op belongs to (0 where it names none).
    pub generation: u32,
    /// Connection slot, send id or timer id.
    pub slot: u32,
}

impl Token {
    /// A token with no connection attached.
    pub fn bare(kind: OpKind, slot: u32) -> Token {
        Token {
            kind,
            generation: 0,
            slot,
        }
    }

    /// A token for connection `slot` of `generation`.
    pub fn conn(kind: OpKind, slot: usize, generation: u32) -> Token {
        Token {
            kind,
            generation: generation & GENERATION_MASK,
            slot: slot as u32,
        }
    }

    /// Packs into `user_data`.
    pub fn pack(self) -> u64 {
        ((self.kind as u64) << 56)
            | (((self.generation & GENERATION_MASK) as u64) << 32)
            | self.slot as u64
    }

    /// Unpacks `user_data`; `None` for values this engine never produces.
    pub fn unpack(user_data: u64) -> Option<Token> {
        Some(Token {
            kind: OpKind::from_u8((user_data >> 56) as u8)?,
            generation: ((user_data >> 32) as u32) & GENERATION_MASK,
            slot: user_data as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind_and_extreme_fields() {
        for kind in [
            OpKind::Accept,
            OpKind::Recv,
            OpKind::Send,
            OpKind::Wake,
            OpKind::Timer,
            OpKind::Cancel,
        ] {
            for (slot, generation) in [
                (0usize, 0u32),
                (u32::MAX as usize, GENERATION_MASK),
                (12345, 678),
            ] {
                let t = Token::conn(kind, slot, generation);
                assert_eq!(Token::unpack(t.pack()), Some(t));
            }
        }
    }

    #[test]
    fn generation_wraps_within_its_field() {
        let t = Token::conn(OpKind::Recv, 7, GENERATION_MASK + 5);
        let u = Token::unpack(t.pack()).unwrap();
        assert_eq!(u.generation, 4);
        assert_eq!(u.slot, 7);
        assert_eq!(u.kind, OpKind::Recv);
    }

    #[test]
    fn unknown_kind_is_rejected() {
        assert_eq!(Token::unpack(0), None);
        assert_eq!(Token::unpack(0xff << 56), None);
    }
}
