//! Fuzz target: arbitrary sequences of packets through the session state machine and the
//! read-ahead, driven as the relay task drives them (`tftp::relay::{transfer, ahead,
//! failover}`): backend datagrams, client datagrams, a backend's ERROR and another backend's
//! takeover, the retransmission timer.
//!
//! The input is read as a list of events (one byte picks the event, the next ones its
//! parameters). Besides "never a panic" (the crate is built with debug assertions here, so an
//! overflow panics too), every DATA served to the client must be one the backend sent: its
//! payload carries a tag the backend put there, fits the negotiated blksize, and when it comes
//! from the read-ahead ring it is byte for byte a datagram the session passed on for that very
//! file position.
#![no_main]

use std::collections::{HashMap, HashSet};

use libfuzzer_sys::fuzz_target;
use tftplb::protocol::options::Options;
use tftplb::protocol::packet::{self, ack_datagram, error_datagram, Kind, Packet};
use tftplb::tftp::readahead::{ReadAhead, Step};
use tftplb::tftp::session::{Action, Outcome, Session, Takeover};

/// The input, read a byte at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The relay of one read, without sockets: what it would send is checked instead.
struct Relay {
    session: Session,
    read_ahead: u16,
    ahead: Option<ReadAhead>,
    ahead_decided: bool,
    resume: bool,
    /// Each DATA the session passed on, by file position, as numbered for the client.
    passed: HashMap<u64, HashSet<Vec<u8>>>,
    /// Tags the backends put in their DATA payloads.
    tags: HashSet<u32>,
    next_tag: u32,
    /// The wire block the current backend leg sends next, when asked for "the next one".
    leg_next: u16,
    ended: bool,
}

impl Relay {
    fn new(read_ahead: u16, resume: bool) -> Relay {
        Relay {
            session: Session::new(),
            read_ahead,
            ahead: None,
            ahead_decided: false,
            resume,
            passed: HashMap::new(),
            tags: HashSet::new(),
            next_tag: 0,
            leg_next: 1,
            ended: false,
        }
    }

    /// A DATA datagram from a backend: a tagged payload of a length chosen by the input.
    fn backend_data(&mut self, input: &mut Input) -> Vec<u8> {
        let block = match input.byte() % 4 {
            0 | 1 => self.leg_next,
            2 => self.leg_next.wrapping_sub(1),
            _ => input.u16(),
        };
        self.leg_next = block.wrapping_add(1);
        let blksize = usize::from(self.session.negotiated().blksize);
        let len = match input.byte() % 4 {
            0 | 1 => blksize,
            2 => usize::from(input.byte()).min(blksize),
            _ => blksize + 1,
        };
        self.next_tag += 1;
        self.tags.insert(self.next_tag);
        let mut data = self.next_tag.to_be_bytes().to_vec();
        data.resize(len.max(4), 0xd5);
        data.truncate(len);
        Packet::Data { block, data }.encode()
    }

    fn oack(input: &mut Input) -> Vec<u8> {
        let mut o = Options::default();
        let blksizes = ["8", "512", "1428", "8192", "65464", "7", "x"];
        if input.byte() % 2 == 0 {
            o.push(
                "blksize",
                blksizes[usize::from(input.byte()) % blksizes.len()],
            );
        }
        if input.byte() % 2 == 0 {
            o.push("windowsize", &(input.byte() % 9).to_string());
        }
        if input.byte() % 2 == 0 {
            o.push("tsize", &input.u16().to_string());
        }
        Packet::Oack(o).encode()
    }

    /// Any datagram the backend may send, built from the input.
    fn backend_datagram(&mut self, input: &mut Input) -> Vec<u8> {
        match input.byte() % 8 {
            0..=4 => self.backend_data(input),
            5 => Relay::oack(input),
            6 => error_datagram(u16::from(input.byte() % 9), "x"),
            _ => {
                let n = usize::from(input.byte());
                let raw = input.bytes(n);
                // Raw bytes are what this backend sent too: a DATA among them has its tag.
                if raw.len() >= 8 && matches!(packet::peek(&raw), Ok(Kind::Data { .. })) {
                    self.tags
                        .insert(u32::from_be_bytes(raw[4..8].try_into().unwrap()));
                }
                raw
            }
        }
    }

    fn step(&mut self, input: &mut Input) {
        match input.byte() % 8 {
            0..=2 => {
                let mut d = self.backend_datagram(input);
                self.on_backend(&mut d, input);
            }
            3 | 4 => {
                let mut d = match input.byte() % 4 {
                    0 => ack_datagram(self.sent_to_client()).to_vec(),
                    1 => ack_datagram(self.sent_to_client().wrapping_add(1)).to_vec(),
                    2 => ack_datagram(input.u16()).to_vec(),
                    _ => error_datagram(0, "abort"),
                };
                self.on_client(&mut d);
            }
            5 => {
                let n = usize::from(input.byte());
                let mut d = input.bytes(n);
                self.on_client(&mut d);
            }
            6 => self.on_timer(),
            _ => self.fail_over(input),
        }
    }

    /// The wire block of the last block the client was sent (what it would acknowledge).
    fn sent_to_client(&self) -> u16 {
        match &self.ahead {
            Some(a) => *a.unacked().end() as u16,
            None => self.session.progress().0 as u16,
        }
    }

    fn on_backend(&mut self, d: &mut [u8], input: &mut Input) {
        if self.ahead.as_ref().is_some_and(ReadAhead::backend_done) {
            return; // the relay drops it: the backend's part is over
        }
        match self.session.on_backend(d) {
            Action::Failover => self.fail_over(input),
            action => self.apply_data(action, d),
        }
    }

    /// As `Relay::apply_data`: read-ahead decided at the first DATA passed on.
    fn apply_data(&mut self, action: Action, d: &[u8]) {
        let passed_on = matches!(action, Action::Forward | Action::ForwardAndEnd(_));
        if passed_on && !self.ahead_decided {
            self.decide_read_ahead(d);
        }
        if passed_on && matches!(packet::peek(d), Ok(Kind::Data { .. })) {
            let pos = self.session.data_position();
            self.passed.entry(pos).or_default().insert(d.to_vec());
        }
        match action {
            Action::Forward | Action::ForwardAndEnd(_) if self.ahead.is_some() => {
                let pos = self.session.data_position();
                let step = self.ahead.as_mut().unwrap().on_data(pos, d);
                self.perform(step);
            }
            Action::Forward | Action::ForwardAndEnd(_) => {
                self.to_client(d, None);
                self.ended |= action.ends().is_some();
            }
            Action::Fail(_) => self.ended = true,
            Action::Drop => {
                let is_data = matches!(packet::peek(d), Ok(Kind::Data { .. }));
                if is_data && !self.session.catching_up() {
                    if let Some(a) = self.ahead.as_mut() {
                        a.on_gap();
                    }
                }
            }
            Action::AckBackend(_) | Action::Consume | Action::Failover => {}
        }
    }

    fn decide_read_ahead(&mut self, d: &[u8]) {
        if !matches!(packet::peek(d), Ok(Kind::Data { .. })) {
            return;
        }
        self.ahead_decided = true;
        if self.read_ahead == 0 || self.session.resumes() > 0 {
            return;
        }
        let n = self.session.negotiated();
        let start = self.session.data_position().saturating_sub(1);
        self.ahead = ReadAhead::new(self.read_ahead, n.blksize, n.windowsize, start);
        if self.ahead.is_some() {
            self.session.set_read_ahead();
        }
    }

    fn perform(&mut self, step: Step) {
        let ahead = self.ahead.as_ref().expect("reading ahead");
        let served: Vec<(u64, Vec<u8>)> = step
            .to_client
            .map(|pos| (pos, ahead.datagram(pos).to_vec()))
            .collect();
        for (pos, d) in served {
            self.to_client(&d, Some(pos));
        }
    }

    /// The invariant: the client only ever gets what a backend sent.
    fn to_client(&self, d: &[u8], from_ring: Option<u64>) {
        let Ok(Kind::Data { len, .. }) = packet::peek(d) else {
            return; // an OACK or ERROR passed on as it came
        };
        assert!(len <= usize::from(self.session.negotiated().blksize));
        if len >= 4 {
            let tag = u32::from_be_bytes(d[4..8].try_into().unwrap());
            assert!(self.tags.contains(&tag), "a payload no backend sent");
        }
        if let Some(pos) = from_ring {
            let passed = self.passed.get(&pos);
            assert!(
                passed.is_some_and(|p| p.contains(d)),
                "the ring served position {pos} with a block not passed on for it"
            );
        }
    }

    fn on_client(&mut self, d: &mut [u8]) {
        let action = self.session.on_client(d);
        let Some(ahead) = self.ahead.as_mut() else {
            self.ended |= action.ends().is_some();
            return;
        };
        match action {
            Action::ForwardAndEnd(Outcome::ClientAborted) => self.ended = true,
            Action::Forward | Action::ForwardAndEnd(_) => {
                let Some(step) = ahead.on_ack(self.session.last_ack()) else {
                    return;
                };
                self.session.client_acked(ahead.acked());
                self.ended |= ahead.complete();
                self.perform(step);
            }
            _ => {}
        }
    }

    fn on_timer(&mut self) {
        if let Some(ahead) = &self.ahead {
            let unacked = ahead.unacked();
            self.perform(Step {
                to_client: unacked,
                ack_backend: None,
            });
        }
    }

    /// As `Relay::fail_over` and `take_over`: another backend answers the same request.
    fn fail_over(&mut self, input: &mut Input) {
        if !self.resume || !self.session.can_resume() {
            self.ended = true;
            return;
        }
        match &mut self.ahead {
            Some(ahead) => {
                ahead.resumed();
                self.session.begin_resume_at(ahead.received());
            }
            None => {
                self.session.begin_resume();
            }
        }
        for _ in 0..3 {
            self.leg_next = 1;
            let mut d = self.backend_datagram(input);
            match self.session.on_takeover_reply(&mut d) {
                Takeover::AckOack => return,
                Takeover::Data(action) => return self.apply_data(action, &d),
                Takeover::SizeChanged(_) => break,
                Takeover::Incompatible(_) | Takeover::Refused => {}
            }
        }
        self.ended = true;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let read_ahead = [0, 2, 3, 4, 8, 64][usize::from(input.byte()) % 6];
    let resume = input.byte() % 2 == 0;
    let mut relay = Relay::new(read_ahead, resume);
    // The first reply is an OACK or DATA, as setup lets through.
    let mut first = if input.byte() % 2 == 0 {
        Relay::oack(&mut input)
    } else {
        relay.backend_data(&mut input)
    };
    relay.on_backend(&mut first, &mut input);
    while !relay.ended && !input.is_empty() {
        relay.step(&mut input);
    }
});
