//! Property test of the read-ahead as a lock-step sender between two real TFTP endpoints,
//! modelled: a backend (sends the next block on the ACK of the current one, re-sends on its
//! timer, ignores old ACKs), the client (accepts the next block, re-ACKs duplicates, re-sends its
//! last ACK on its timer), and four lossy one-way links. Any order of deliveries, losses and
//! timer firings must never hand the client a wrong block, and once the links stop losing
//! packets the transfer must finish.

use std::collections::VecDeque;

use proptest::prelude::*;
use tftplb::tftp::packet::Packet;
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
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize).prop_map(Op::Deliver),
        1 => (0..4usize).prop_map(Op::Drop),
        1 => Just(Op::BackendTimer),
        1 => Just(Op::RelayTimer),
        1 => Just(Op::ClientTimer),
    ]
}

/// Links: 0 backend → relay (DATA), 1 relay → backend (ACK), 2 relay → client (DATA),
/// 3 client → relay (ACK). Every message is a position.
struct World {
    blocks: u64,
    links: [VecDeque<u64>; 4],
    backend_cur: u64,
    backend_done: bool,
    relay: ReadAhead,
    /// Highest ACK the relay has seen (what the session passes on as `acked`).
    relay_acked: u64,
    client_got: Vec<Vec<u8>>,
}

impl World {
    fn new(ahead: u16, blocks: u64) -> World {
        let mut w = World {
            blocks,
            links: Default::default(),
            backend_cur: 1,
            backend_done: false,
            relay: ReadAhead::new(ahead, BLKSIZE as u16, 0),
            relay_acked: 0,
            client_got: Vec::new(),
        };
        w.links[0].push_back(1); // the backend's answer to the request
        w
    }

    fn apply(&mut self, step: Step) {
        if let Some(a) = step.ack_backend {
            self.links[1].push_back(a);
        }
        self.links[2].extend(step.to_client);
    }

    fn run(&mut self, op: Op) {
        match op {
            Op::Drop(l) => {
                self.links[l].pop_front();
            }
            Op::Deliver(l) => {
                if let Some(pos) = self.links[l].pop_front() {
                    self.deliver(l, pos);
                }
            }
            Op::BackendTimer if !self.backend_done => self.links[0].push_back(self.backend_cur),
            Op::RelayTimer => {
                let unacked = self.relay.unacked();
                self.links[2].extend(unacked);
            }
            Op::ClientTimer => self.links[3].push_back(self.client_got.len() as u64),
            _ => {}
        }
    }

    fn deliver(&mut self, link: usize, pos: u64) {
        match link {
            0 => {
                let step = self.relay.on_data(pos, &block(pos, self.blocks));
                self.apply(step);
            }
            1 if pos == self.backend_cur && !self.backend_done => {
                if pos == self.blocks {
                    self.backend_done = true;
                } else {
                    self.backend_cur += 1;
                    self.links[0].push_back(self.backend_cur);
                }
            }
            2 => {
                let data = self.relay.datagram(pos).to_vec();
                assert_eq!(
                    data,
                    block(pos, self.blocks),
                    "the client was sent a wrong block"
                );
                let expected = self.client_got.len() as u64 + 1;
                if pos == expected {
                    self.client_got.push(data);
                }
                if pos <= expected {
                    self.links[3].push_back(pos);
                }
            }
            3 => {
                self.relay_acked = self.relay_acked.max(pos);
                let step = self.relay.on_ack(self.relay_acked);
                self.apply(step);
            }
            _ => {}
        }
    }

    /// Lossless from here on: deliver everything, firing timers when the links are empty.
    fn finish(&mut self) -> bool {
        for _ in 0..10_000 {
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
        blocks in 1u64..20,
        ops in prop::collection::vec(op(), 0..300),
    ) {
        let mut w = World::new(ahead, blocks);
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
