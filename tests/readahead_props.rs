//! Property test of the read-ahead as a sender between two real TFTP endpoints, lock-step and
//! windowed (RFC 7440), modelled: a backend (sends its window on the ACK of the previous one,
//! re-sends it on its timer), the client (takes the next block, acknowledges each window, says
//! where it stands on a duplicate or a gap and on its timer, now and then acknowledges a block
//! it does not have), and four lossy one-way links. Any order of deliveries, losses, stray ACKs
//! and timer firings must never hand the client a wrong block, and once the links stop losing
//! packets the transfer must finish.

use std::collections::VecDeque;

use proptest::prelude::*;
use tftplb::protocol::packet::Packet;
use tftplb::tftp::readahead::{ReadAhead, Step};

const BLKSIZE: usize = 8;

fn block(pos: u64, blocks: u64) -> Vec<u8> {
    let len = if pos == blocks { 3 } else { BLKSIZE };
    Packet::Data {
        block: pos as u16,
        data: vec![pos as u8; len],
    }
    .encode()
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Deliver(usize),
    Drop(usize),
    BackendTimer,
    RelayTimer,
    ClientTimer,
    /// An ACK of a block the relay read ahead but has not sent, as a buggy or hostile client
    /// sends.
    StrayAck,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize).prop_map(Op::Deliver),
        1 => (0..4usize).prop_map(Op::Drop),
        1 => Just(Op::BackendTimer),
        1 => Just(Op::RelayTimer),
        1 => Just(Op::ClientTimer),
        1 => Just(Op::StrayAck),
    ]
}

/// Links: 0 backend → relay (DATA), 1 relay → backend (ACK), 2 relay → client (DATA, as sent),
/// 3 client → relay (ACK). Every message is a position.
struct World {
    blocks: u64,
    window: u64,
    links: [VecDeque<u64>; 4],
    /// What went to the client, copied when sent (link 2).
    to_client: VecDeque<Vec<u8>>,
    /// The backend: last position acknowledged to it, and whether it is done.
    backend_base: u64,
    backend_done: bool,
    relay: ReadAhead,
    client_got: Vec<Vec<u8>>,
    /// Blocks the client took since its last ACK.
    client_since_ack: u64,
}

impl World {
    fn new(ahead: u16, window: u16, blocks: u64) -> World {
        let mut w = World {
            blocks,
            window: u64::from(window),
            links: Default::default(),
            to_client: VecDeque::new(),
            backend_base: 0,
            backend_done: false,
            relay: ReadAhead::new(ahead, BLKSIZE as u16, window, 0).expect("fits"),
            client_got: Vec::new(),
            client_since_ack: 0,
        };
        w.backend_sends_window(); // its answer to the client's ACK of the OACK
        w
    }

    fn backend_sends_window(&mut self) {
        let last = (self.backend_base + self.window).min(self.blocks);
        self.links[0].extend(self.backend_base + 1..=last);
    }

    fn apply(&mut self, step: Step) {
        if let Some(a) = step.ack_backend {
            self.links[1].push_back(a);
        }
        for pos in step.to_client {
            self.send_to_client(pos);
        }
    }

    fn send_to_client(&mut self, pos: u64) {
        self.links[2].push_back(pos);
        self.to_client.push_back(self.relay.datagram(pos).to_vec());
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Drop(2) => {
                self.links[2].pop_front();
                self.to_client.pop_front();
            }
            Op::Drop(l) => {
                self.links[l].pop_front();
            }
            Op::Deliver(l) => {
                if let Some(pos) = self.links[l].pop_front() {
                    self.deliver(l, pos);
                }
            }
            Op::BackendTimer if !self.backend_done => self.backend_sends_window(),
            Op::RelayTimer => {
                for pos in self.relay.unacked() {
                    self.send_to_client(pos);
                }
            }
            Op::ClientTimer => self.client_acks(),
            Op::StrayAck => self.stray_ack(),
            _ => {}
        }
    }

    /// An ACK arrives for a block the relay read ahead but has not sent: it must be ignored
    /// (before, it was kept as the client's position and every later ACK looked old).
    fn stray_ack(&mut self) {
        let unacked = self.relay.unacked();
        let sent = if unacked.is_empty() {
            self.relay.acked()
        } else {
            *unacked.end()
        };
        if sent < self.relay.received() {
            assert_eq!(
                self.relay.on_ack(sent + 1),
                None,
                "an unsent block acknowledged"
            );
        }
    }

    /// The client acknowledges the last block it has in order.
    fn client_acks(&mut self) {
        self.client_since_ack = 0;
        self.links[3].push_back(self.client_got.len() as u64);
    }

    fn deliver(&mut self, link: usize, pos: u64) {
        match link {
            // The session drops a block after a gap; the relay then asks for the window again.
            0 if pos > self.relay.received() + 1 => {
                if let Some(a) = self.relay.on_gap() {
                    self.links[1].push_back(a);
                }
            }
            0 => {
                let step = self.relay.on_data(pos, &block(pos, self.blocks));
                self.apply(step);
            }
            // RFC 7440 sender: an ACK within its window moves the window there (an ACK of its
            // base asks for the window again); lock-step ignores a duplicate ACK.
            1 if !self.backend_done => {
                let base = self.backend_base;
                let in_window = pos > base && pos <= base + self.window;
                if in_window || (pos == base && self.window > 1) {
                    self.backend_base = pos;
                    if pos == self.blocks {
                        self.backend_done = true;
                    } else {
                        self.backend_sends_window();
                    }
                }
            }
            2 => {
                let data = self.to_client.pop_front().expect("sent with its bytes");
                assert_eq!(
                    data,
                    block(pos, self.blocks),
                    "the client was sent a wrong block"
                );
                let expected = self.client_got.len() as u64 + 1;
                if pos == expected {
                    self.client_got.push(data);
                    self.client_since_ack += 1;
                    if self.client_since_ack == self.window || pos == self.blocks {
                        self.client_acks();
                    }
                } else {
                    self.client_acks(); // a duplicate or a gap: say where it stands
                }
            }
            3 => {
                // Each ACK on its own; one of a block not sent yet is ignored.
                if let Some(step) = self.relay.on_ack(pos) {
                    self.apply(step);
                }
            }
            _ => {}
        }
    }

    /// Lossless from here on: deliver everything, firing timers when the links are empty.
    fn finish(&mut self) -> bool {
        for _ in 0..20_000 {
            if self.relay.complete() {
                return true;
            }
            match (0..4).find(|&l| !self.links[l].is_empty()) {
                Some(l) => self.run(Op::Deliver(l)),
                None => {
                    self.run(Op::BackendTimer);
                    self.run(Op::RelayTimer);
                    self.run(Op::ClientTimer);
                }
            }
        }
        false
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn any_losses_and_reorders_deliver_the_file_in_order(
        ahead in 1u16..6,
        window in prop_oneof![Just(1u16), Just(2), Just(4)],
        blocks in 1u64..30,
        ops in prop::collection::vec(op(), 0..300),
    ) {
        let mut w = World::new(ahead, window, blocks);
        for op in ops {
            w.run(op);
        }
        prop_assert!(w.finish(), "stuck: the transfer never completed");
        prop_assert_eq!(w.client_got.len() as u64, blocks);
        for (i, got) in w.client_got.iter().enumerate() {
            prop_assert_eq!(got, &block(i as u64 + 1, blocks));
        }
        prop_assert!(w.relay.backend_done());
    }
}
