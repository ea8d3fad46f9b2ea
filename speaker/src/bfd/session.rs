//! One BFD session's state machine (RFC 5880 §6.8, single hop RFC 5881), time and jitter
//! passed in (pure). Asynchronous mode only: no demand mode, no echo.

use std::time::{Duration, Instant};

use super::packet::{BfdState, Control, diag};

/// Transmit interval while the session is not Up (RFC 5880 §6.8.3: at least one second).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// The timers asked for (a `BFDProfile`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BfdConfig {
    /// Desired minimum transmit interval.
    pub desired_min_tx: Duration,
    /// Required minimum receive interval.
    pub required_min_rx: Duration,
    /// Detection multiplier.
    pub detect_mult: u8,
    /// Send nothing until the peer has sent something.
    pub passive: bool,
}

impl Default for BfdConfig {
    fn default() -> Self {
        BfdConfig {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
            passive: false,
        }
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// A session.
#[derive(Clone, Debug)]
pub struct BfdSession {
    config: BfdConfig,
    local_discriminator: u32,
    remote_discriminator: u32,
    state: BfdState,
    diag: u8,
    remote_min_rx: u32,
    remote_desired_tx: u32,
    remote_detect_mult: u8,
    /// Desired min TX advertised now (slow while not Up, changed through a Poll sequence).
    tx_in_use: u32,
    /// A Poll sequence is running (P set until an F arrives).
    polling: bool,
    /// The next packet answers a Poll (F set).
    final_due: bool,
    next_tx: Option<Instant>,
    detect_deadline: Option<Instant>,
}

impl BfdSession {
    /// A Down session with discriminator `local_discriminator` (non-zero, unique on the node).
    pub fn new(config: BfdConfig, local_discriminator: u32, now: Instant) -> BfdSession {
        BfdSession {
            config,
            local_discriminator,
            remote_discriminator: 0,
            state: BfdState::Down,
            diag: diag::NONE,
            // RFC 5880 §6.8.1: 1 until the peer says otherwise.
            remote_min_rx: 1,
            remote_desired_tx: 0,
            remote_detect_mult: 0,
            tx_in_use: micros(SLOW_TX.max(config.desired_min_tx)),
            polling: false,
            final_due: false,
            next_tx: (!config.passive).then_some(now),
            detect_deadline: None,
        }
    }

    /// The session's state.
    pub fn state(&self) -> BfdState {
        self.state
    }

    /// This side's discriminator.
    pub fn local_discriminator(&self) -> u32 {
        self.local_discriminator
    }

    /// The peer's discriminator (0 until known, and again after a timeout).
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discriminator
    }

    /// When [`BfdSession::poll`] has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.next_tx, self.detect_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// The detection time the peer's packets set (RFC 5880 §6.8.4).
    fn detection_time(&self) -> Duration {
        let interval = micros(self.config.required_min_rx).max(self.remote_desired_tx);
        Duration::from_micros(u64::from(self.remote_detect_mult) * u64::from(interval))
    }

    /// A received packet (already checked by [`Control::parse`]); returns the new state if it
    /// changed.
    pub fn receive(&mut self, now: Instant, c: &Control) -> Option<BfdState> {
        if c.your_discriminator != 0 && c.your_discriminator != self.local_discriminator {
            return None;
        }
        if c.your_discriminator == 0 && !matches!(c.state, BfdState::Down | BfdState::AdminDown) {
            return None;
        }
        self.remote_discriminator = c.my_discriminator;
        self.remote_min_rx = c.required_min_rx;
        self.remote_desired_tx = c.desired_min_tx;
        self.remote_detect_mult = c.detect_mult;
        if c.final_ && self.polling {
            self.polling = false;
        }
        if c.poll {
            self.final_due = true;
            self.next_tx = Some(now);
        } else if self.next_tx.is_none() {
            // Passive: the peer spoke first; start sending.
            self.next_tx = Some(now);
        }
        let before = self.state;
        match (self.state, c.state) {
            (BfdState::AdminDown, _) => return None,
            (BfdState::Down, BfdState::AdminDown) => {}
            (BfdState::Init | BfdState::Up, BfdState::AdminDown) => {
                self.go_down(diag::NEIGHBOR_DOWN);
            }
            (BfdState::Down, BfdState::Down) => self.state = BfdState::Init,
            (BfdState::Down, BfdState::Init) | (BfdState::Init, BfdState::Init | BfdState::Up) => {
                self.go_up(now);
            }
            (BfdState::Up, BfdState::Down) => self.go_down(diag::NEIGHBOR_DOWN),
            _ => {}
        }
        self.detect_deadline = match self.state {
            BfdState::Init | BfdState::Up => Some(now + self.detection_time()),
            _ => None,
        };
        (self.state != before).then_some(self.state)
    }

    fn go_up(&mut self, now: Instant) {
        self.state = BfdState::Up;
        self.diag = diag::NONE;
        let fast = micros(self.config.desired_min_tx);
        if fast != self.tx_in_use {
            // Leave the slow rate through a Poll sequence (RFC 5880 §6.8.3).
            self.tx_in_use = fast;
            self.polling = true;
            self.next_tx = Some(now);
        }
    }

    fn go_down(&mut self, why: u8) {
        self.state = BfdState::Down;
        self.diag = why;
        self.tx_in_use = micros(SLOW_TX.max(self.config.desired_min_tx));
        self.polling = false;
    }

    /// What is due at `now`: a packet to send, and the new state if the detection time ran out.
    /// `jitter` in [0, 1) picks the next interval between 75 % and 100 % (90 % with a
    /// multiplier of 1) of the nominal one (RFC 5880 §6.8.7).
    pub fn poll(&mut self, now: Instant, jitter: f64) -> (Option<Control>, Option<BfdState>) {
        let mut changed = None;
        if self.detect_deadline.is_some_and(|d| now >= d) {
            self.go_down(diag::DETECTION_TIME_EXPIRED);
            self.remote_discriminator = 0;
            self.detect_deadline = None;
            changed = Some(BfdState::Down);
        }
        let mut packet = None;
        if let Some(at) = self.next_tx
            && now >= at
        {
            packet = Some(self.packet());
            self.final_due = false;
            // A peer asking for no packets (Required Min RX 0) gets none but answers to polls.
            let interval = self.tx_in_use.max(self.remote_min_rx);
            self.next_tx = if self.remote_min_rx == 0 {
                None
            } else {
                let low = 0.75;
                let high = if self.config.detect_mult == 1 {
                    0.90
                } else {
                    1.0
                };
                let factor = low + (high - low) * jitter.clamp(0.0, 1.0);
                Some(now + Duration::from_micros((f64::from(interval) * factor) as u64))
            };
        }
        (packet, changed)
    }

    fn packet(&self) -> Control {
        Control {
            diag: self.diag,
            state: self.state,
            poll: self.polling,
            final_: self.final_due,
            demand: false,
            detect_mult: self.config.detect_mult,
            my_discriminator: self.local_discriminator,
            your_discriminator: self.remote_discriminator,
            desired_min_tx: self.tx_in_use,
            required_min_rx: micros(self.config.required_min_rx),
            required_min_echo_rx: 0,
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
