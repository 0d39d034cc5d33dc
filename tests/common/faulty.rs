//! A TFTP backend that misbehaves on purpose (async-tftp with a custom handler): it serves
//! in-memory files and, after a given number of bytes, stalls, fails, signals the test (which
//! then kills the server), or it reads slowly throughout.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_tftp::packet;
use async_tftp::server::Handler;
use tftplb::demo::EmbeddedServer;

#[derive(Debug, Clone)]
pub enum Fault {
    None,
    /// Stops sending after this many bytes (the transfer hangs).
    StallAfter(usize),
    /// The read fails after this many bytes (the server sends an ERROR).
    FailAfter(usize),
    /// Tells the test once this many bytes were read (the test then kills the server).
    NotifyAfter(usize, tokio::sync::mpsc::UnboundedSender<()>),
    /// Every read waits this long first.
    Slow(Duration),
}

#[derive(Clone)]
pub struct FaultyHandler {
    files: Arc<HashMap<String, Vec<u8>>>,
    fault: Fault,
}

impl FaultyHandler {
    pub fn new(files: &[(&str, Vec<u8>)], fault: Fault) -> FaultyHandler {
        let files = files
            .iter()
            .map(|(n, d)| (n.to_string(), d.clone()))
            .collect();
        FaultyHandler {
            files: Arc::new(files),
            fault,
        }
    }

    pub async fn start(self) -> EmbeddedServer {
        EmbeddedServer::with_handler(self, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap()
    }
}

impl Handler for FaultyHandler {
    type Reader = FaultyReader;
    type Writer = futures_lite::io::Sink;

    async fn read_req_open(
        &mut self,
        _: &SocketAddr,
        path: &Path,
    ) -> Result<(FaultyReader, Option<u64>), packet::Error> {
        let name = path.to_string_lossy();
        let data = self
            .files
            .get(name.trim_start_matches('/'))
            .ok_or(packet::Error::FileNotFound)?;
        let len = data.len() as u64;
        let reader = FaultyReader {
            data: data.clone(),
            pos: 0,
            fault: self.fault.clone(),
            notified: false,
            delay: None,
        };
        Ok((reader, Some(len)))
    }

    async fn write_req_open(
        &mut self,
        _: &SocketAddr,
        _: &Path,
        _: Option<u64>,
    ) -> Result<futures_lite::io::Sink, packet::Error> {
        Err(packet::Error::IllegalOperation)
    }
}

pub struct FaultyReader {
    data: Vec<u8>,
    pos: usize,
    fault: Fault,
    notified: bool,
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl futures_lite::AsyncRead for FaultyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match this.fault.clone() {
            Fault::StallAfter(n) if this.pos >= n => return Poll::Pending,
            Fault::FailAfter(n) if this.pos >= n => {
                return Poll::Ready(Err(io::Error::other("injected read failure")));
            }
            Fault::NotifyAfter(n, tx) if this.pos >= n && !this.notified => {
                this.notified = true;
                let _ = tx.send(());
            }
            Fault::Slow(d) => {
                let sleep = this
                    .delay
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(d)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.delay = None;
            }
            _ => {}
        }
        let n = buf.len().min(this.data.len() - this.pos);
        buf[..n].copy_from_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(n))
    }
}
