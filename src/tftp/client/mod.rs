//! Async TFTP download client (RFC 1350 with RFC 2347/2348/2349/7440 options).
//!
//! Used by `tftplb get`, the health prober, the integration tests and the bench harness, which
//! runs thousands of transfers from one process. So a transfer costs one UDP socket, one receive
//! buffer and one retransmission buffer, allocated once; DATA packets are read with
//! [`packet::peek`] and copied straight from the receive buffer into the sink.
//!
//! The design splits three concerns:
//! - [`Conn`] owns the socket and the retransmission timer. It locks onto the server's TID (the
//!   source of its first reply, which must come from the IP the RRQ went to), answers strangers
//!   with ERROR 5 without letting them disturb the transfer, and resends the *pending* packet
//!   when no progress was made for `retry_timeout`. The pending packet is the RRQ, then the ACK
//!   of the last in-order block, even when that ACK was not sent yet (RFC 7440 windows: on a
//!   timeout, acknowledge the last in-order block). The timer is one long-lived `Sleep` that is
//!   re-armed lazily only when it fires, so a received packet costs a clock read, not a timer
//!   registration.
//! - [`Sequence`] (in `protocol::blocks`) maps 16-bit wire block numbers to a 64-bit count: in
//!   order, old (duplicate, ignored: sorcerer's apprentice) or ahead (a gap: re-ACK the last
//!   in-order block, once per gap). It decides at the first wrap whether the server rolls over
//!   to 0 or to 1.
//! - [`Receiver`] drives a download: OACK validation, windowed ACKs, end of transfer on a short
//!   block, tsize check.
//!
//! There is no dallying after the final ACK: if it is lost the server retransmits its last block
//! into a closed socket and times out, which costs the server a little and the client nothing.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::Instant;

use crate::protocol::options::{DEFAULT_BLKSIZE, Negotiated, Options};
use crate::protocol::packet::{self, Kind, Mode, Packet, Request};

mod conn;
mod receiver;

use conn::Conn;
use receiver::Receiver;

/// What the client asks for and how patient it is.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Request the `blksize` option (RFC 2348).
    pub blksize: Option<u16>,
    /// Request the `windowsize` option (RFC 7440).
    pub windowsize: Option<u16>,
    /// Request `tsize` (sent as "0", RFC 2349); the announced size is then checked.
    pub tsize: bool,
    /// Request the `timeout` option (RFC 2349, seconds). Our own timer stays `retry_timeout`.
    pub timeout_option: Option<u8>,
    /// Time without progress before the pending packet is retransmitted.
    pub retry_timeout: Duration,
    /// Retransmissions without progress before giving up with [`ClientError::Timeout`].
    pub retries: u32,
    /// Local address to bind; default: the unspecified address of the server's family, port 0.
    pub bind: Option<SocketAddr>,
    /// Options sent verbatim after the known ones (the server may acknowledge them).
    pub extra_options: Vec<(String, String)>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            blksize: None,
            windowsize: None,
            tsize: false,
            timeout_option: None,
            retry_timeout: Duration::from_secs(1),
            retries: 5,
            bind: None,
            extra_options: Vec::new(),
        }
    }
}

/// What a finished download did.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Payload bytes written to the sink.
    pub bytes: u64,
    /// DATA blocks received in order (the final short or empty block included).
    pub blocks: u64,
    /// Parameters the transfer ran with (defaults when the server ignored the options).
    pub negotiated: Negotiated,
    /// The server's OACK, if it sent one.
    pub oack: Option<Options>,
    pub elapsed: Duration,
    /// The address:port the server answered from.
    pub server_tid: SocketAddr,
    /// Our own address:port (which port a bound-to-0 client got: to match it with server logs).
    pub local: Option<SocketAddr>,
    /// Packets we sent again after a timeout or to report a gap.
    pub retransmissions: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no answer from the server after all retransmissions")]
    Timeout,
    #[error("server error {code}: {message}")]
    Remote { code: u16, message: String },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("server announced tsize {expected} but sent {got} bytes")]
    SizeMismatch { expected: u64, got: u64 },
}

/// Downloads `file` from `server` into `sink`.
pub async fn download<W: AsyncWrite + Unpin>(
    server: SocketAddr,
    file: &str,
    cfg: &ClientConfig,
    sink: &mut W,
) -> Result<Transfer, ClientError> {
    let started = Instant::now();
    let mut conn = Conn::open(server, cfg).await?;
    let mut buf = vec![0; recv_buffer_len(cfg)];
    conn.send(&rrq(file, cfg, cfg.tsize)).await?;
    let first = conn.recv(&mut buf).await?;
    let mut rx = Receiver::start(conn, cfg, &buf[..first]).await?;
    rx.run(&mut buf, first, sink).await?;
    Ok(rx.into_transfer(started.elapsed()))
}

/// Downloads `file` into memory.
pub async fn fetch(
    server: SocketAddr,
    file: &str,
    cfg: &ClientConfig,
) -> Result<(Vec<u8>, Transfer), ClientError> {
    let mut data = Vec::new();
    let transfer = download(server, file, cfg, &mut data).await?;
    Ok((data, transfer))
}

/// Sends an RRQ with `tsize` (and the options of `cfg`), waits for the OACK, then aborts with
/// ERROR `abort_code` (0 or 8) like EDK2 UEFI PXE does. Returns the tsize the server announced
/// (`None` when it ignored the options and sent DATA 1, which is aborted the same way).
pub async fn probe_tsize(
    server: SocketAddr,
    file: &str,
    cfg: &ClientConfig,
    abort_code: u16,
) -> Result<Option<u64>, ClientError> {
    let mut conn = Conn::open(server, cfg).await?;
    let mut buf = vec![0; recv_buffer_len(cfg)];
    conn.send(&rrq(file, cfg, true)).await?;
    let n = conn.recv(&mut buf).await?;
    let tsize = match peek_checked(&buf[..n])? {
        Kind::Oack => decode_oack(&buf[..n])?.tsize(),
        Kind::Data { .. } => None,
        Kind::Error { .. } => return Err(remote_error(&buf[..n])),
        other => return Err(conn.refuse(other).await),
    };
    conn.send_error(abort_code, "tsize probe done").await?;
    Ok(tsize)
}

/// 4 header bytes, the largest block the server may send, and one byte more so that an
/// oversized datagram shows up as too long instead of being silently truncated.
fn recv_buffer_len(cfg: &ClientConfig) -> usize {
    4 + usize::from(cfg.blksize.unwrap_or(0).max(DEFAULT_BLKSIZE)) + 1
}

/// The RRQ datagram: mode octet, options only when configured.
fn rrq(file: &str, cfg: &ClientConfig, tsize: bool) -> Vec<u8> {
    let mut options = Options::default();
    let mut push = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            options.push(name, &v);
        }
    };
    push("blksize", cfg.blksize.map(|b| b.to_string()));
    push("tsize", tsize.then(|| "0".to_string()));
    push("timeout", cfg.timeout_option.map(|t| t.to_string()));
    push("windowsize", cfg.windowsize.map(|w| w.to_string()));
    for (name, value) in &cfg.extra_options {
        options.push(name, value);
    }
    let request = Request {
        filename: file.as_bytes().to_vec(),
        mode: Mode::Octet,
        options,
    };
    Packet::Rrq(request).encode()
}

/// Checks an OACK against what we asked for (RFC 2347: a server acknowledges only requested
/// options and never raises blksize or windowsize).
fn check_oack(oack: &Options, cfg: &ClientConfig, asked_tsize: bool) -> Result<(), String> {
    for (name, value) in oack.iter() {
        if !requested(name, cfg, asked_tsize) {
            return Err(format!("OACK has unrequested option {name}={value}"));
        }
    }
    check_limit("blksize", oack.get("blksize"), oack.blksize(), cfg.blksize)?;
    check_limit(
        "windowsize",
        oack.get("windowsize"),
        oack.windowsize(),
        cfg.windowsize,
    )
}

fn requested(name: &str, cfg: &ClientConfig, asked_tsize: bool) -> bool {
    let is = |known: &str| name.eq_ignore_ascii_case(known);
    (is("blksize") && cfg.blksize.is_some())
        || (is("windowsize") && cfg.windowsize.is_some())
        || (is("timeout") && cfg.timeout_option.is_some())
        || (is("tsize") && asked_tsize)
        || cfg.extra_options.iter().any(|(n, _)| is(n))
}

/// An acknowledged numeric option must be valid and no larger than requested.
fn check_limit(
    name: &str,
    raw: Option<&str>,
    got: Option<u16>,
    asked: Option<u16>,
) -> Result<(), String> {
    match (raw, got, asked) {
        (None, _, _) => Ok(()),
        (Some(_), Some(g), Some(a)) if g <= a => Ok(()),
        (Some(raw), _, _) => Err(format!(
            "OACK {name}={raw} is invalid or above the requested {asked:?}"
        )),
    }
}

fn peek_checked(datagram: &[u8]) -> Result<Kind, ClientError> {
    packet::peek(datagram).map_err(|e| ClientError::Protocol(format!("bad datagram: {e}")))
}

fn decode_oack(datagram: &[u8]) -> Result<Options, ClientError> {
    match Packet::decode(datagram) {
        Ok(Packet::Oack(options)) => Ok(options),
        Ok(_) => unreachable!("peek said OACK"),
        Err(e) => Err(ClientError::Protocol(format!("bad OACK: {e}"))),
    }
}

fn remote_error(datagram: &[u8]) -> ClientError {
    match Packet::decode(datagram) {
        Ok(Packet::Error { code, message }) => ClientError::Remote { code, message },
        _ => ClientError::Protocol("malformed ERROR packet".to_string()),
    }
}

/// ERROR 5, prebuilt: strangers are answered without allocating.
#[cfg(test)]
mod tests {
    use tokio::net::UdpSocket;

    use super::*;

    const WAIT: Duration = Duration::from_secs(30);

    /// One transfer as the fake server sees it: the RRQ and the socket of its TID.
    struct Session {
        tid: UdpSocket,
        client: SocketAddr,
        request: Request,
    }

    /// How the fake server sends a file.
    #[derive(Clone, Default)]
    struct Serve {
        blksize: usize,
        window: u64,
        /// The block after 65535: 0 or 1.
        wrap_to: u16,
        oack: Option<Vec<(&'static str, String)>>,
        /// Skip this block (count) the first time it is due, to make a gap.
        drop_once: Option<u64>,
    }

    fn plain() -> Serve {
        Serve {
            blksize: 512,
            window: 1,
            ..Serve::default()
        }
    }

    /// A port-69 stand-in on loopback; the task gets the first session.
    async fn fake_server<F, Fut>(handler: F) -> (SocketAddr, tokio::task::JoinHandle<Fut::Output>)
    where
        F: FnOnce(Session) -> Fut + Send + 'static,
        Fut: std::future::Future + Send,
        Fut::Output: Send + 'static,
    {
        let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { handler(accept(&listener).await).await });
        (addr, task)
    }

    async fn accept(listener: &UdpSocket) -> Session {
        let mut buf = vec![0; 2048];
        let (n, client) = listener.recv_from(&mut buf).await.unwrap();
        let Ok(Packet::Rrq(request)) = Packet::decode(&buf[..n]) else {
            panic!("not an RRQ: {:?}", &buf[..n]);
        };
        let tid = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Session {
            tid,
            client,
            request,
        }
    }

    fn wire(count: u64, wrap_to: u16) -> u16 {
        if wrap_to == 1 && count > 0 {
            ((count - 1) % 65535 + 1) as u16
        } else {
            count as u16
        }
    }

    impl Session {
        async fn send(&self, p: &Packet) {
            self.tid.send_to(&p.encode(), self.client).await.unwrap();
        }

        /// The next packet from the client, or `None` after `timeout`.
        async fn recv(&self, timeout: Duration) -> Option<Packet> {
            let mut buf = vec![0; 2048];
            let (n, from) = tokio::time::timeout(timeout, self.tid.recv_from(&mut buf))
                .await
                .ok()?
                .unwrap();
            assert_eq!(from, self.client);
            Some(Packet::decode(&buf[..n]).unwrap())
        }

        /// Waits for an ACK of a count in `range`; `None` on a timeout (then resend).
        async fn wait_ack(
            &self,
            range: std::ops::RangeInclusive<u64>,
            s: &Serve,
            acks: &mut Vec<u16>,
        ) -> Option<u64> {
            loop {
                match self.recv(Duration::from_secs(5)).await? {
                    Packet::Ack { block, .. } => {
                        acks.push(block);
                        if let Some(k) = range.clone().find(|&k| wire(k, s.wrap_to) == block) {
                            return Some(k);
                        }
                    }
                    other => panic!("fake server got {other:?}"),
                }
            }
        }

        /// Serves `data` (RFC 7440 sender, no loss expected); returns the ACKs it saw.
        async fn serve(&self, data: &[u8], mut s: Serve) -> Vec<u16> {
            let mut acks = Vec::new();
            if let Some(oack) = &s.oack {
                let mut options = Options::default();
                oack.iter().for_each(|(k, v)| options.push(k, v));
                let oack = Packet::Oack(options);
                self.send(&oack).await;
                while self.wait_ack(0..=0, &s, &mut acks).await.is_none() {
                    self.send(&oack).await;
                }
            }
            let total = (data.len() / s.blksize) as u64 + 1;
            let mut base = 1;
            while base <= total {
                let end = (base + s.window - 1).min(total);
                for k in base..=end {
                    if s.drop_once == Some(k) {
                        s.drop_once = None;
                        continue;
                    }
                    self.send_block(data, k, &s).await;
                }
                if let Some(k) = self.wait_ack(base - 1..=end, &s, &mut acks).await {
                    base = k + 1;
                }
            }
            acks
        }

        async fn send_block(&self, data: &[u8], k: u64, s: &Serve) {
            let start = ((k - 1) as usize * s.blksize).min(data.len());
            let end = (start + s.blksize).min(data.len());
            let block = wire(k, s.wrap_to);
            let mut out = Vec::with_capacity(4 + end - start);
            out.extend_from_slice(&[0, 3]);
            out.extend_from_slice(&block.to_be_bytes());
            out.extend_from_slice(&data[start..end]);
            self.tid.send_to(&out, self.client).await.unwrap();
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Loopback loses nothing, so no test but the timeout test needs a timer: a long one keeps
    /// exact packet counts true on a loaded machine.
    fn patient() -> ClientConfig {
        ClientConfig {
            retry_timeout: Duration::from_secs(5),
            ..ClientConfig::default()
        }
    }

    async fn fetch_in_time(
        server: SocketAddr,
        cfg: &ClientConfig,
    ) -> Result<(Vec<u8>, Transfer), ClientError> {
        tokio::time::timeout(WAIT, fetch(server, "f", cfg))
            .await
            .expect("transfer hangs")
    }

    #[tokio::test]
    async fn plain_downloads_of_edge_sizes() {
        for size in [0, 511, 512, 513, 1024, 1500] {
            let data = pattern(size);
            let served = data.clone();
            let (addr, server) = fake_server(|s| async move {
                assert!(s.request.options.is_empty());
                assert_eq!(s.request.mode, Mode::Octet);
                s.serve(&served, plain()).await
            })
            .await;
            let (got, t) = fetch_in_time(addr, &patient()).await.unwrap();
            assert_eq!(got, data, "size {size}");
            assert_eq!((t.bytes, t.blocks), (size as u64, size as u64 / 512 + 1));
            assert_eq!(t.negotiated, Negotiated::default());
            assert!(t.oack.is_none());
            assert_ne!(t.server_tid, addr);
            let acks = server.await.unwrap();
            assert_eq!(acks, (1..=t.blocks as u16).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn oack_with_blksize_windowsize_and_tsize() {
        let data = pattern(1468 * 10 + 100);
        let served = data.clone();
        let (addr, server) = fake_server(|s| async move {
            let o = &s.request.options;
            assert_eq!(
                (o.blksize(), o.windowsize(), o.tsize()),
                (Some(1468), Some(4), Some(0))
            );
            let oack = vec![
                ("blksize", "1468".into()),
                ("windowsize", "4".into()),
                ("tsize", served.len().to_string()),
            ];
            let serve = Serve {
                blksize: 1468,
                window: 4,
                oack: Some(oack),
                ..plain()
            };
            s.serve(&served, serve).await
        })
        .await;
        let cfg = ClientConfig {
            blksize: Some(1468),
            windowsize: Some(4),
            tsize: true,
            ..patient()
        };
        let (got, t) = fetch_in_time(addr, &cfg).await.unwrap();
        assert_eq!(got, data);
        assert_eq!(t.negotiated.blksize, 1468);
        assert_eq!(t.negotiated.windowsize, 4);
        assert_eq!(t.negotiated.tsize, Some(data.len() as u64));
        assert_eq!(t.blocks, 11);
        assert_eq!(server.await.unwrap(), vec![0, 4, 8, 11]);
    }

    #[tokio::test]
    async fn smaller_blksize_in_the_oack_wins() {
        let data = pattern(3000);
        let served = data.clone();
        let (addr, _server) = fake_server(|s| async move {
            let serve = Serve {
                blksize: 1024,
                window: 1,
                oack: Some(vec![("blksize", "1024".into())]),
                ..plain()
            };
            s.serve(&served, serve).await
        })
        .await;
        let cfg = ClientConfig {
            blksize: Some(1468),
            ..patient()
        };
        let (got, t) = fetch_in_time(addr, &cfg).await.unwrap();
        assert_eq!(got, data);
        assert_eq!((t.negotiated.blksize, t.blocks), (1024, 3));
    }

    /// 70,000 blocks of 8 bytes, each carrying its own count, so a misplaced block shows.
    fn counted_blocks() -> Vec<u8> {
        let mut data: Vec<u8> = (1..70_000u64).flat_map(|k| k.to_le_bytes()).collect();
        data.extend_from_slice(b"end");
        data
    }

    async fn rollover(wrap_to: u16, window: u16, retransmissions: u64) {
        let data = counted_blocks();
        let served = data.clone();
        let (addr, _server) = fake_server(move |s| async move {
            let oack = vec![("blksize", "8".into()), ("windowsize", window.to_string())];
            let serve = Serve {
                blksize: 8,
                window: window.into(),
                wrap_to,
                oack: Some(oack),
                ..plain()
            };
            s.serve(&served, serve).await
        })
        .await;
        let cfg = ClientConfig {
            blksize: Some(8),
            windowsize: Some(window),
            ..patient()
        };
        let (got, t) = tokio::time::timeout(Duration::from_secs(120), fetch(addr, "f", &cfg))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.blocks, 70_000);
        assert_eq!(t.retransmissions, retransmissions);
        assert!(got == data, "content differs");
    }

    #[tokio::test]
    async fn rollover_to_zero_in_lock_step() {
        rollover(0, 1, 0).await;
    }

    #[tokio::test]
    async fn rollover_to_one_with_windows() {
        // Block 1 after 65535 is first taken for a gap (block 0 lost?): one re-ACK.
        rollover(1, 16, 1).await;
    }

    #[tokio::test]
    async fn a_gap_in_a_window_is_reacked_once_and_recovered() {
        let data = pattern(512 * 20 + 3);
        let served = data.clone();
        let (addr, server) = fake_server(|s| async move {
            let oack = vec![("windowsize", "8".into())];
            let serve = Serve {
                window: 8,
                oack: Some(oack),
                drop_once: Some(3),
                ..plain()
            };
            s.serve(&served, serve).await
        })
        .await;
        let cfg = ClientConfig {
            windowsize: Some(8),
            ..patient()
        };
        let (got, t) = fetch_in_time(addr, &cfg).await.unwrap();
        assert_eq!(got, data);
        assert_eq!(t.retransmissions, 1);
        // ACK 0, the gap's re-ACK of block 2, then full windows from block 3 on.
        assert_eq!(server.await.unwrap(), vec![0, 2, 10, 18, 21]);
    }

    #[tokio::test]
    async fn strangers_get_error_5_and_do_not_disturb() {
        let data = pattern(1000);
        let served = data.clone();
        let (addr, _server) = fake_server(|s| async move {
            s.send_block(&served, 1, &plain()).await;
            assert!(matches!(
                s.recv(WAIT).await,
                Some(Packet::Ack { block: 1, .. })
            ));
            let rogue = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            rogue
                .send_to(b"\x00\x03\x00\x02junk", s.client)
                .await
                .unwrap();
            let mut buf = [0; 64];
            let n = rogue.recv(&mut buf).await.unwrap();
            assert_eq!(
                Packet::decode(&buf[..n]).unwrap(),
                Packet::Error {
                    code: 5,
                    message: "unknown transfer ID".into()
                }
            );
            s.send_block(&served, 2, &plain()).await;
            assert!(matches!(
                s.recv(WAIT).await,
                Some(Packet::Ack { block: 2, .. })
            ));
        })
        .await;
        let (got, t) = fetch_in_time(addr, &patient()).await.unwrap();
        assert_eq!(got, data);
        assert_eq!(t.retransmissions, 0);
    }

    #[tokio::test]
    async fn silent_server_times_out_after_the_retries() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let cfg = ClientConfig {
            retry_timeout: Duration::from_millis(50),
            retries: 2,
            ..ClientConfig::default()
        };
        let err = fetch(silent.local_addr().unwrap(), "f", &cfg)
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout), "{err:?}");
        let mut buf = [0; 512];
        for _ in 0..3 {
            let n = silent.recv(&mut buf).await.unwrap();
            assert!(matches!(Packet::decode(&buf[..n]), Ok(Packet::Rrq(_))));
        }
    }

    #[tokio::test]
    async fn probe_tsize_reads_the_oack_and_aborts() {
        let (addr, server) = fake_server(|s| async move {
            assert_eq!(s.request.options.get("tsize"), Some("0"));
            let mut oack = Options::default();
            oack.push("tsize", "1234");
            s.send(&Packet::Oack(oack)).await;
            s.recv(WAIT).await
        })
        .await;
        let tsize = probe_tsize(addr, "f", &patient(), 8).await.unwrap();
        assert_eq!(tsize, Some(1234));
        assert!(matches!(
            server.await.unwrap(),
            Some(Packet::Error { code: 8, .. })
        ));
    }

    #[tokio::test]
    async fn unrequested_option_is_refused_with_error_8() {
        let (addr, server) = fake_server(|s| async move {
            let mut oack = Options::default();
            oack.push("windowsize", "4");
            s.send(&Packet::Oack(oack)).await;
            s.recv(WAIT).await
        })
        .await;
        let err = fetch_in_time(addr, &patient()).await.unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
        assert!(matches!(
            server.await.unwrap(),
            Some(Packet::Error { code: 8, .. })
        ));
    }

    #[tokio::test]
    async fn blksize_above_the_request_is_refused() {
        let (addr, server) = fake_server(|s| async move {
            let mut oack = Options::default();
            oack.push("blksize", "1500");
            s.send(&Packet::Oack(oack)).await;
            s.recv(WAIT).await
        })
        .await;
        let cfg = ClientConfig {
            blksize: Some(1468),
            ..patient()
        };
        let err = fetch_in_time(addr, &cfg).await.unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
        assert!(matches!(
            server.await.unwrap(),
            Some(Packet::Error { code: 8, .. })
        ));
    }

    #[tokio::test]
    async fn wrong_tsize_is_a_size_mismatch() {
        let (addr, _server) = fake_server(|s| async move {
            let serve = Serve {
                oack: Some(vec![("tsize", "999".into())]),
                ..plain()
            };
            s.serve(&pattern(700), serve).await
        })
        .await;
        let cfg = ClientConfig {
            tsize: true,
            ..patient()
        };
        let err = fetch_in_time(addr, &cfg).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::SizeMismatch {
                    expected: 999,
                    got: 700
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn server_error_is_remote() {
        let (addr, _server) = fake_server(|s| async move {
            s.send(&Packet::Error {
                code: 1,
                message: "File not found".into(),
            })
            .await;
        })
        .await;
        let err = fetch_in_time(addr, &patient()).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Remote { code: 1, ref message } if message == "File not found"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn oversized_data_is_a_protocol_error() {
        let (addr, _server) = fake_server(|s| async move {
            // A proper block 1 locks the TID; block 2 is larger than the 512 in force.
            s.send_block(&pattern(2000), 1, &plain()).await;
            let mut out = vec![0, 3, 0, 2];
            out.extend_from_slice(&pattern(600));
            s.tid.send_to(&out, s.client).await.unwrap();
        })
        .await;
        let err = fetch_in_time(addr, &patient()).await.unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_first_data_larger_than_512_is_not_an_answer() {
        let (addr, _server) = fake_server(|s| async move {
            let serve = Serve {
                blksize: 600,
                ..plain()
            };
            s.send_block(&pattern(1000), 1, &serve).await;
        })
        .await;
        let cfg = ClientConfig {
            retry_timeout: Duration::from_millis(100),
            retries: 1,
            ..ClientConfig::default()
        };
        let err = fetch_in_time(addr, &cfg).await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout), "{err:?}");
    }

    /// Serves `data` as `boot.img` from async-tftp and downloads it with `cfg`.
    async fn via_async_tftp(data: &[u8], cfg: &ClientConfig) -> (Vec<u8>, Transfer) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("boot.img"), data).unwrap();
        let server = async_tftp::server::TftpServerBuilder::with_dir_ro(dir.path())
            .unwrap()
            .bind("127.0.0.1:0".parse().unwrap())
            .build()
            .await
            .unwrap();
        let addr = server.listen_addr().unwrap();
        let task = tokio::spawn(server.serve());
        let result =
            tokio::time::timeout(Duration::from_secs(120), fetch(addr, "boot.img", cfg)).await;
        task.abort();
        result.expect("transfer hangs").unwrap()
    }

    #[tokio::test]
    async fn downloads_from_async_tftp_with_windows() {
        let data = pattern(1024 * 300 + 17);
        let cfg = ClientConfig {
            blksize: Some(1024),
            windowsize: Some(8),
            tsize: true,
            ..patient()
        };
        let (got, t) = via_async_tftp(&data, &cfg).await;
        assert!(got == data, "content differs");
        assert_eq!((t.negotiated.blksize, t.negotiated.windowsize), (1024, 8));
        assert_eq!(t.negotiated.tsize, Some(data.len() as u64));
    }

    #[tokio::test]
    async fn forty_mib_at_512_byte_blocks_from_async_tftp() {
        let data = pattern(40 << 20);
        let cfg = ClientConfig {
            windowsize: Some(16),
            tsize: true,
            ..patient()
        };
        let (got, t) = via_async_tftp(&data, &cfg).await;
        assert!(got == data, "content differs");
        assert_eq!(t.blocks, (40 << 20) / 512 + 1);
    }
}
