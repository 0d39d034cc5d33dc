//! The relay allocates nothing per relayed packet in the steady state. A counting global
//! allocator watches the whole process while a raw client and a raw backend, using datagrams
//! built beforehand, push 1,000 lock-step blocks through an in-process tftplb.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use common::Tftplb;
use tftplb::protocol::options::Options;
use tftplb::protocol::packet::{Mode, Packet, Request, ack_datagram};
use tokio::net::UdpSocket;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM_UP: u16 = 200;
const MEASURED: u16 = 1000;

#[tokio::test(flavor = "current_thread")]
async fn relaying_a_block_allocates_nothing() {
    let backend = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let lb = Tftplb::with_pool("round-robin", &[backend.local_addr().unwrap()]).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let total = WARM_UP + MEASURED + 1;
    // Every datagram of the transfer, built before anything is counted.
    let blocks: Vec<Vec<u8>> = (1..=total)
        .map(|b| {
            Packet::Data {
                block: b,
                data: vec![b as u8; if b == total { 10 } else { 512 }],
            }
            .encode()
        })
        .collect();
    let rrq = Packet::Rrq(Request {
        filename: "f".into(),
        mode: Mode::Octet,
        options: Options::default(),
    })
    .encode();
    let mut cbuf = vec![0u8; 1024];
    let mut bbuf = vec![0u8; 1024];

    client.send_to(&rrq, lb.addr).await.unwrap();
    let (_, relay_side) = backend.recv_from(&mut bbuf).await.unwrap();
    let tid = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut session: Option<SocketAddr> = None;
    let mut before = 0;
    for b in 1..=total {
        if b == WARM_UP + 1 {
            before = ALLOCATIONS.load(Ordering::Relaxed);
        }
        tid.send_to(&blocks[usize::from(b - 1)], relay_side)
            .await
            .unwrap();
        let (n, from) = client.recv_from(&mut cbuf).await.unwrap();
        assert_eq!(n, blocks[usize::from(b - 1)].len());
        session.get_or_insert(from);
        client.send_to(&ack_datagram(b), from).await.unwrap();
        let (n, _) = tid.recv_from(&mut bbuf).await.unwrap();
        assert_eq!(&bbuf[..n], &ack_datagram(b));
        if b == WARM_UP + MEASURED {
            let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
            // 2,000 relayed datagrams; a handful of allocations at most may come from
            // housekeeping or the runtime, never one per packet.
            assert!(
                during < 20,
                "{during} allocations while relaying {MEASURED} blocks"
            );
        }
    }
    assert!(
        before > 0,
        "the counting allocator sees the setup's allocations"
    );
    assert!(lb.wait_idle().await);
}
