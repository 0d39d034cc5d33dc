//! Every real client downloads every test file through tftplb, from both backend kinds
//! (tftpd-hpa and embedded async-tftp), under every balancing policy, and what arrives has the
//! sha256 of what was served.

mod common;

use common::{Backends, RealClient, TEST_FILES, Tftplb, Tree};

const POLICIES: [&str; 4] = ["round-robin", "weighted", "least-sessions", "source-hash"];
const BACKEND_KINDS: [&str; 2] = ["tftpd-hpa", "async-tftp"];

/// Which files a client is expected to fetch. curl 7.88 fails on a 0-byte file even straight
/// from tftpd-hpa (exit 71, getpeername), so that one pair is checked to fail the same way
/// directly instead (see `curl_empty_file_fails_directly_too`).
fn files_for(client: RealClient) -> Vec<&'static str> {
    TEST_FILES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !(matches!(client, RealClient::Curl { .. }) && *name == "empty.bin"))
        .collect()
}

async fn every_file_every_backend_every_policy(client: RealClient) {
    let tree = Tree::new(TEST_FILES);
    let mut failures = Vec::new();
    for kind in BACKEND_KINDS {
        let backends = Backends::start(kind, tree.path(), 2).await;
        for policy in POLICIES {
            let lb = Tftplb::with_pool(policy, &backends.addresses()).await;
            for file in files_for(client) {
                match client.get(lb.addr, file).await {
                    Ok(data) if common::sha256(&data) == tree.sha256_of(file) => {}
                    Ok(data) => failures.push(format!(
                        "{kind}/{policy}/{file}: got {} bytes, wrong sha256",
                        data.len()
                    )),
                    Err(e) => failures.push(format!("{kind}/{policy}/{file}: {e}")),
                }
            }
            assert!(
                lb.wait_idle().await,
                "{kind}/{policy}: sessions left behind"
            );
            let spread = lb.sessions_per_backend();
            assert!(
                spread.iter().all(|&n| n > 0) || policy == "source-hash",
                "{kind}/{policy}: {spread:?}"
            );
            lb.stop().await;
        }
    }
    assert!(failures.is_empty(), "{client:?}:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl() {
    every_file_every_backend_every_policy(RealClient::Curl { blksize: 1468 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftp_windowsize() {
    every_file_every_backend_every_policy(RealClient::Atftp {
        blksize: 1468,
        windowsize: 16,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_hpa_without_options() {
    every_file_every_backend_every_policy(RealClient::TftpHpa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox() {
    every_file_every_backend_every_policy(RealClient::Busybox { blksize: 1468 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_empty_file_fails_directly_too() {
    let tree = Tree::new(&[("empty.bin", 0)]);
    let backends = Backends::start("tftpd-hpa", tree.path(), 1).await;
    let direct = RealClient::Curl { blksize: 1468 }
        .get(backends.addresses()[0], "empty.bin")
        .await;
    assert!(
        direct.is_err(),
        "curl fetched an empty file directly: the skip above is stale"
    );
}
