//! BFD control packets (RFC 5880 §4.1), without authentication (pure).
//!
//! Written here: no maintained Rust crate implements BFD, and the packet is 24 fixed bytes.

/// Length of a control packet without authentication.
pub const LEN: usize = 24;

/// Session state as carried in packets (RFC 5880 §4.1 "Sta").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BfdState {
    /// AdminDown (0).
    AdminDown,
    /// Down (1).
    Down,
    /// Init (2).
    Init,
    /// Up (3).
    Up,
}

impl BfdState {
    fn from_bits(bits: u8) -> BfdState {
        match bits & 3 {
            0 => BfdState::AdminDown,
            1 => BfdState::Down,
            2 => BfdState::Init,
            _ => BfdState::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            BfdState::AdminDown => 0,
            BfdState::Down => 1,
            BfdState::Init => 2,
            BfdState::Up => 3,
        }
    }

    /// The RFC's name.
    pub fn name(self) -> &'static str {
        match self {
            BfdState::AdminDown => "AdminDown",
            BfdState::Down => "Down",
            BfdState::Init => "Init",
            BfdState::Up => "Up",
        }
    }
}

/// Diagnostic codes (RFC 5880 §4.1 "Diag").
pub mod diag {
    /// No diagnostic.
    pub const NONE: u8 = 0;
    /// Control Detection Time Expired.
    pub const DETECTION_TIME_EXPIRED: u8 = 1;
    /// Neighbor Signaled Session Down.
    pub const NEIGHBOR_DOWN: u8 = 3;
    /// Administratively Down.
    pub const ADMIN_DOWN: u8 = 7;
}

/// A control packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control {
    /// Diagnostic code.
    pub diag: u8,
    /// Sender's state.
    pub state: BfdState,
    /// Poll bit.
    pub poll: bool,
    /// Final bit.
    pub final_: bool,
    /// Demand mode bit.
    pub demand: bool,
    /// Detect multiplier.
    pub detect_mult: u8,
    /// Sender's discriminator.
    pub my_discriminator: u32,
    /// The discriminator the sender knows for the receiver (0 if none yet).
    pub your_discriminator: u32,
    /// Desired minimum transmit interval, microseconds.
    pub desired_min_tx: u32,
    /// Required minimum receive interval, microseconds.
    pub required_min_rx: u32,
    /// Required minimum echo receive interval, microseconds (0: no echo).
    pub required_min_echo_rx: u32,
}

/// Why a received packet is discarded (RFC 5880 §6.8.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Fewer than 24 bytes, or the Length field says otherwise.
    #[error("bad length")]
    Length,
    /// Version is not 1.
    #[error("version is not 1")]
    Version,
    /// Detect Mult is zero.
    #[error("detect multiplier is zero")]
    DetectMult,
    /// Multipoint bit set.
    #[error("multipoint bit set")]
    Multipoint,
    /// My Discriminator is zero.
    #[error("my discriminator is zero")]
    Discriminator,
    /// Authentication present (ferrolb runs BFD without authentication).
    #[error("authentication is not supported")]
    Authentication,
}

impl Control {
    /// Parses and checks a packet as §6.8.6 requires before any state is touched.
    pub fn parse(bytes: &[u8]) -> Result<Control, PacketError> {
        if bytes.len() < LEN {
            return Err(PacketError::Length);
        }
        if bytes[0] >> 5 != 1 {
            return Err(PacketError::Version);
        }
        let length = usize::from(bytes[3]);
        let flags = bytes[1];
        let auth = flags & 0x04 != 0;
        if length < LEN || length > bytes.len() || (!auth && length != LEN) {
            return Err(PacketError::Length);
        }
        if auth {
            return Err(PacketError::Authentication);
        }
        if bytes[2] == 0 {
            return Err(PacketError::DetectMult);
        }
        if flags & 0x01 != 0 {
            return Err(PacketError::Multipoint);
        }
        let word =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let control = Control {
            diag: bytes[0] & 0x1f,
            state: BfdState::from_bits(flags >> 6),
            poll: flags & 0x20 != 0,
            final_: flags & 0x10 != 0,
            demand: flags & 0x02 != 0,
            detect_mult: bytes[2],
            my_discriminator: word(4),
            your_discriminator: word(8),
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
        };
        if control.my_discriminator == 0 {
            return Err(PacketError::Discriminator);
        }
        Ok(control)
    }

    /// The packet's 24 bytes.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (1 << 5) | (self.diag & 0x1f);
        b[1] = (self.state.bits() << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.final_) << 4)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_discriminator.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discriminator.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Control {
        Control {
            diag: diag::DETECTION_TIME_EXPIRED,
            state: BfdState::Init,
            poll: true,
            final_: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 0x0102_0304,
            your_discriminator: 7,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
        }
    }

    #[test]
    fn packets_round_trip_bit_for_bit() {
        let c = sample();
        let bytes = c.encode();
        assert_eq!(bytes[0], 0x21, "version 1, diag 1");
        assert_eq!(bytes[1], 0xa0, "Init, Poll");
        assert_eq!(bytes[3], 24);
        assert_eq!(Control::parse(&bytes), Ok(c));
        for state in [
            BfdState::AdminDown,
            BfdState::Down,
            BfdState::Init,
            BfdState::Up,
        ] {
            let c = Control {
                state,
                final_: true,
                poll: false,
                ..sample()
            };
            assert_eq!(Control::parse(&c.encode()), Ok(c));
        }
    }

    #[test]
    fn invalid_packets_are_refused_for_the_rfc_reasons() {
        let good = sample().encode();
        let with = |i: usize, v: u8| {
            let mut b = good;
            b[i] = v;
            b
        };
        assert_eq!(Control::parse(&good[..23]), Err(PacketError::Length));
        assert_eq!(Control::parse(&with(0, 0x41)), Err(PacketError::Version));
        assert_eq!(Control::parse(&with(3, 30)), Err(PacketError::Length));
        assert_eq!(Control::parse(&with(2, 0)), Err(PacketError::DetectMult));
        assert_eq!(Control::parse(&with(1, 0xa1)), Err(PacketError::Multipoint));
        let mut zero = good;
        zero[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(Control::parse(&zero), Err(PacketError::Discriminator));
        let mut auth = [0u8; 28];
        auth[..24].copy_from_slice(&with(1, 0xa4));
        auth[3] = 28;
        assert_eq!(Control::parse(&auth), Err(PacketError::Authentication));
    }
}
