//! A boot server at its capacity, as atftpd `--maxthread`, dnsmasq `--tftp-max` or a busy PVS
//! server behave: it serves at most `cap` transfers at once and drops every other request
//! silently (the client's retransmission is its retry). Lock-step, 512-byte blocks, options
//! ignored; each block waits `block_delay` first, so a transfer holds its slot for a while.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tftplb::protocol::packet::{Packet, ack_datagram};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// A running capped server; aborted when dropped.
pub struct CappedServer {
    pub address: SocketAddr,
    /// Requests dropped because every slot was taken.
    pub dropped: Arc<AtomicU64>,
    /// Transfers finished (the final block acknowledged).
    pub served: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for CappedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    content: Vec<u8>,
    name: String,
    cap: usize,
    block_delay: Duration,
    /// Clients being served (a repeated request from one of them is ignored, as servers do).
    busy: Mutex<HashSet<SocketAddr>>,
    dropped: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
}

impl CappedServer {
    /// Serves `name` with `content`, at most `cap` transfers at once.
    pub async fn start(name: &str, content: Vec<u8>, cap: usize, block_delay: Duration) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let (dropped, served) = (Arc::default(), Arc::default());
        let shared = Arc::new(Shared {
            content,
            name: name.to_string(),
            cap,
            block_delay,
            busy: Mutex::new(HashSet::new()),
            dropped: Arc::clone(&dropped),
            served: Arc::clone(&served),
        });
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(Packet::Rrq(request)) = Packet::decode(&buf[..n]) else {
                    continue;
                };
                if request
                    .filename
                    .strip_prefix(b"/")
                    .unwrap_or(&request.filename)
                    != shared.name.as_bytes()
                {
                    continue;
                }
                if !shared.admit(peer) {
                    continue;
                }
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    if serve(&shared, peer).await {
                        shared.served.fetch_add(1, Ordering::Relaxed);
                    }
                    shared.busy.lock().unwrap().remove(&peer);
                });
            }
        });
        CappedServer {
            address,
            dropped,
            served,
            task,
        }
    }
}

impl Shared {
    /// Whether a request from `peer` starts a transfer: not when one for it runs already, and
    /// not when every slot is taken (then it is dropped without a word).
    fn admit(&self, peer: SocketAddr) -> bool {
        let mut busy = self.busy.lock().unwrap();
        if busy.contains(&peer) {
            return false;
        }
        if busy.len() >= self.cap {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        busy.insert(peer);
        true
    }
}

/// One lock-step transfer from a socket of its own; whether the client acknowledged it all.
async fn serve(shared: &Shared, peer: SocketAddr) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let blocks = shared.content.len() / 512 + 1;
    let mut buf = [0u8; 64];
    for i in 0..blocks {
        tokio::time::sleep(shared.block_delay).await;
        let block = (i + 1) as u16;
        let end = ((i + 1) * 512).min(shared.content.len());
        let data = Packet::Data {
            block,
            data: shared.content[i * 512..end].to_vec(),
        }
        .encode();
        let mut acked = false;
        for _ in 0..5 {
            let _ = socket.send_to(&data, peer).await;
            let wait = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    match socket.recv_from(&mut buf).await {
                        Ok((n, from)) if from == peer && buf[..n] == ack_datagram(block) => {
                            return;
                        }
                        Ok(_) | Err(_) => {}
                    }
                }
            });
            if wait.await.is_ok() {
                acked = true;
                break;
            }
        }
        if !acked {
            return false;
        }
    }
    true
}
