//! `dns`: queries per second and latency of tftplb's DNS server vs NSD, Knot and dnsmasq
//! (whichever are installed), each started by the harness on a loopback port with the same core
//! budget (`taskset`), driven by `dnsperf`, in the same run.
//!
//! Not available yet: tftplb has no DNS server. When `src/dns.rs` lands, this file gets a
//! `Params` (queries, duration, cores), starts tftplb with a `[dns]` section and the reference
//! servers with the same zone, and reports each one's qps and latency with the ratio to NSD.
//! Until then it says so and measures nothing: no number is better than a made-up one.

use serde::Serialize;

use super::Ctx;
use crate::report;

#[derive(Debug, Serialize)]
pub struct Results {
    pub status: &'static str,
    pub reason: &'static str,
}

const REASON: &str = "tftplb has no DNS server yet (the DNS issue); nothing was measured";

pub async fn run(ctx: &Ctx) -> Result<(), String> {
    println!("\ndns: not available yet: {REASON}");
    let r = Results {
        status: "not-available",
        reason: REASON,
    };
    report::write_json(&ctx.out, "dns", &ctx.meta, &(), &r)?;
    Ok(())
}
