//! Routing rules with two pools of real backends serving different content: by client subnet,
//! by MAC learned from a pxelinux request (and remembered for the kernel that follows), refuse,
//! ignore, and the kernel's neighbour table — the last inside network namespaces this test
//! creates (skipped with a printed reason where namespaces are not available).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::Tftplb;
use common::daemon::{Daemon, Output};
use common::faulty::{Fault, FaultyHandler};
use tftplb::demo::EmbeddedServer;
use tftplb::tftp::client::{self, ClientConfig, ClientError};

async fn pool_serving(name: &str) -> EmbeddedServer {
    let files = [
        ("who", name.as_bytes().to_vec()),
        ("vmlinuz", format!("{name} kernel").into_bytes()),
        (
            "pxelinux.cfg/01-00-1a-2b-00-00-07",
            format!("{name} config").into_bytes(),
        ),
        (
            "pxelinux.cfg/default",
            format!("{name} default").into_bytes(),
        ),
    ];
    FaultyHandler::new(&files, Fault::None).start().await
}

async fn two_pools(routes: &str) -> (EmbeddedServer, EmbeddedServer, Tftplb) {
    let thin = pool_serving("thin").await;
    let pc = pool_serving("pc").await;
    let pools = format!(
        "{}\n{}\n{routes}",
        common::pool_toml("pc", "round-robin", "", &[pc.address]),
        common::pool_toml("thin", "round-robin", "", &[thin.address])
    );
    let lb = Tftplb::start("", &pools).await;
    (thin, pc, lb)
}

fn from(ip: [u8; 4]) -> ClientConfig {
    ClientConfig {
        bind: Some(SocketAddr::new(IpAddr::from(ip), 0)),
        retries: 1,
        retry_timeout: Duration::from_millis(400),
        ..ClientConfig::default()
    }
}

async fn get(lb: &Tftplb, ip: [u8; 4], file: &str) -> Result<String, ClientError> {
    client::fetch(lb.addr, file, &from(ip))
        .await
        .map(|(d, _)| String::from_utf8(d).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_in_a_subnet_go_to_their_pool() {
    let (_t, _p, lb) =
        two_pools("[[route]]\nname = \"thin-lab\"\nclients = [\"127.0.20.0/24\"]\npool = \"thin\"")
            .await;
    assert_eq!(get(&lb, [127, 0, 20, 5], "who").await.unwrap(), "thin");
    assert_eq!(
        get(&lb, [127, 0, 21, 5], "who").await.unwrap(),
        "pc",
        "default pool"
    );
    let hits = lb.frontend.runtime().router.hits();
    assert_eq!(hits, vec![("thin-lab".to_string(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mac_learned_from_a_pxelinux_request_routes_the_kernel_too() {
    let (_t, _p, lb) = two_pools("[[route]]\nmacs = [\"00:1a:2b:*\"]\npool = \"thin\"").await;
    let ip = [127, 0, 22, 9];
    // Before the client said who it is, a MAC rule cannot match.
    assert_eq!(get(&lb, ip, "who").await.unwrap(), "pc");
    assert_eq!(
        get(&lb, ip, "pxelinux.cfg/01-00-1a-2b-00-00-07")
            .await
            .unwrap(),
        "thin config"
    );
    assert_eq!(
        get(&lb, ip, "vmlinuz").await.unwrap(),
        "thin kernel",
        "remembered for this client"
    );
    assert_eq!(
        get(&lb, [127, 0, 22, 10], "vmlinuz").await.unwrap(),
        "pc kernel",
        "other clients unaffected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_answers_error_2_and_ignore_answers_nothing() {
    let routes = "[[route]]\nclients = [\"127.0.23.0/24\"]\naction = \"refuse\"\n\
                  [[route]]\nclients = [\"127.0.24.0/24\"]\naction = \"ignore\"\n\
                  [[route]]\nfiles = [\"pxelinux.cfg/*\"]\npool = \"thin\"";
    let (_t, _p, lb) = two_pools(routes).await;
    match get(&lb, [127, 0, 23, 1], "who").await {
        Err(ClientError::Remote { code: 2, message }) => {
            assert_eq!(message, "not served on this network")
        }
        other => panic!("expected ERROR 2, got {other:?}"),
    }
    match get(&lb, [127, 0, 24, 1], "who").await {
        Err(ClientError::Timeout) => {}
        other => panic!("expected silence, got {other:?}"),
    }
    assert_eq!(
        get(&lb, [127, 0, 25, 1], "pxelinux.cfg/default")
            .await
            .unwrap(),
        "thin default",
        "file rule"
    );
    assert_eq!(get(&lb, [127, 0, 25, 1], "who").await.unwrap(), "pc");
}

#[test]
fn check_warns_about_shadowed_rules_and_unreached_pools() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        "[[pool]]\nname = \"pc\"\n[[pool.backend]]\naddress = \"192.0.2.1:69\"\n\
         [[pool]]\nname = \"thin\"\n[[pool.backend]]\naddress = \"192.0.2.2:69\"\n\
         [[pool]]\nname = \"old\"\n[[pool.backend]]\naddress = \"192.0.2.3:69\"\n\
         [[route]]\nclients = [\"10.0.0.0/8\"]\npool = \"thin\"\n\
         [[route]]\nclients = [\"10.20.0.0/16\"]\npool = \"pc\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tftplb"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "warnings are not errors: {stdout}");
    assert!(
        stdout.contains("route[1]") && stdout.contains("can never match"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pool \"old\" is reached by no route"),
        "{stdout}"
    );
}

/// Two network namespaces joined by a veth pair; deleted on drop.
struct Namespaces {
    lb: String,
    client: String,
}

impl Namespaces {
    fn create() -> Result<Namespaces, String> {
        let id = std::process::id();
        let ns = Namespaces {
            lb: format!("tftplb-lb-{id}"),
            client: format!("tftplb-cl-{id}"),
        };
        let (va, vb) = (format!("tlbA{id}"), format!("tlbB{id}"));
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &ns.lb],
            vec!["netns", "add", &ns.client],
            vec!["link", "add", &va, "type", "veth", "peer", "name", &vb],
            vec!["link", "set", &va, "netns", &ns.lb],
            vec!["link", "set", &vb, "netns", &ns.client],
            vec!["-n", &ns.lb, "addr", "add", "10.213.77.1/24", "dev", &va],
            vec![
                "-n",
                &ns.client,
                "addr",
                "add",
                "10.213.77.2/24",
                "dev",
                &vb,
            ],
            vec!["-n", &ns.lb, "link", "set", &va, "up"],
            vec!["-n", &ns.lb, "link", "set", "lo", "up"],
            vec!["-n", &ns.client, "link", "set", &vb, "up"],
        ];
        for args in steps {
            let out = Command::new("ip")
                .args(&args)
                .output()
                .map_err(|e| format!("ip: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(ns)
    }

    fn client_mac(&self) -> String {
        let vb = format!("tlbB{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "cat"])
            .arg(format!("/sys/class/net/{vb}/address"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.lb, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs tftplb inside the lb namespace with a `who` file per pool, and one curl from the client
/// namespace; returns what curl got.
fn boot_through_namespaces(ns: &Namespaces, mac_rule: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut backends = Vec::new();
    for (name, port) in [("pc", 6901), ("thin", 6902)] {
        let root = dir.path().join(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("who"), name).unwrap();
        make_readable(&root);
        // A fixed port is safe here: the namespace is new, empty and ours alone.
        let mut tftpd = Command::new("ip");
        tftpd
            .args([
                "netns",
                "exec",
                &ns.lb,
                "/usr/sbin/in.tftpd",
                "-L",
                "-s",
                "-a",
                &format!("127.0.0.1:{port}"),
            ])
            .arg(&root);
        backends.push(Daemon::spawn(tftpd, Output::Stderr));
    }
    let cfg = dir.path().join("tftplb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[admin]\nenabled = false\n[tftp]\nlisten = [\"10.213.77.1:0\"]\nneighbour_lookup = true\n\
             [[pool]]\nname = \"pc\"\n[[pool.backend]]\naddress = \"127.0.0.1:6901\"\n\
             [[pool]]\nname = \"thin\"\n[[pool.backend]]\naddress = \"127.0.0.1:6902\"\n\
             [[route]]\nmacs = [\"{mac_rule}\"]\npool = \"thin\"\n"
        ),
    )
    .unwrap();
    let mut run = Command::new("ip");
    run.args([
        "netns",
        "exec",
        &ns.lb,
        env!("CARGO_BIN_EXE_tftplb"),
        "run",
        "--config",
    ])
    .arg(&cfg);
    let lb = Daemon::spawn(run, Output::Stderr);
    let port = lb.address("tftp").port();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.client,
            "curl",
            "-sS",
            "--max-time",
            "10",
        ])
        .arg(format!("tftp://10.213.77.1:{port}/who"))
        .output()
        .unwrap();
    drop((lb, backends));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn make_readable(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        std::fs::set_permissions(e.unwrap().path(), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    if let Some(parent) = dir.parent() {
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn the_neighbour_table_names_on_link_clients() {
    let ns = match Namespaces::create() {
        Ok(ns) => ns,
        Err(why) => {
            println!("skipped: network namespaces are not available here ({why})");
            return;
        }
    };
    let mac = ns.client_mac();
    assert_eq!(
        boot_through_namespaces(&ns, &mac),
        "thin",
        "the client's MAC {mac} matched the rule"
    );
    assert_eq!(
        boot_through_namespaces(&ns, "de:ad:be:ef:00:01"),
        "pc",
        "another MAC does not"
    );
}

/// Firmware that hangs on blksize 1468 with tsize: a rule for its clients lowers blksize and
/// windowsize and leaves tsize out. The backend (tftpd-hpa) is asked only what the rule lets
/// through, the client's OACK says what it got, and the file arrives whole; other clients keep
/// their options.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_s_options_policy_is_what_the_backend_is_asked() {
    let tree = common::Tree::new(&[("ARDBP32.BIN", 300_000)]);
    let tftpd = common::TftpdHpa::start(tree.path());
    let pools = format!(
        "{}\n[[route]]\nname = \"old firmware\"\nclients = [\"127.0.26.0/24\"]\npool = \"pvs\"\n\
         max_blksize = 1024\nmax_windowsize = 4\ndrop_options = [\"tsize\"]\n",
        common::pool_toml("pvs", "round-robin", "", &[tftpd.address])
    );
    let lb = Tftplb::start("", &pools).await;
    let want = tree.sha256_of("ARDBP32.BIN");
    let asking = |ip: [u8; 4]| ClientConfig {
        blksize: Some(1468),
        windowsize: Some(16),
        tsize: true,
        ..from(ip)
    };
    let (data, t) = client::fetch(lb.addr, "ARDBP32.BIN", &asking([127, 0, 26, 5]))
        .await
        .unwrap();
    assert_eq!(common::sha256(&data), want);
    let oack = t.oack.expect("an OACK");
    assert_eq!(oack.blksize(), Some(1024), "{oack:?}");
    assert_eq!(oack.tsize(), None, "tsize was left out: {oack:?}");
    assert!(oack.windowsize().is_none_or(|w| w <= 4), "{oack:?}");
    // Another client's options reach the backend as sent.
    let (data, t) = client::fetch(lb.addr, "ARDBP32.BIN", &asking([127, 0, 27, 5]))
        .await
        .unwrap();
    assert_eq!(common::sha256(&data), want);
    let oack = t.oack.expect("an OACK");
    assert_eq!((oack.blksize(), oack.tsize()), (Some(1468), Some(300_000)));
    // A real client through the rule: curl asks blksize 1468 and tsize.
    let out = tokio::process::Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "20",
            "--interface",
            "127.0.26.6",
            "--tftp-blksize",
            "1468",
        ])
        .arg(format!("tftp://{}/ARDBP32.BIN", lb.addr))
        .output()
        .await
        .expect("curl runs");
    assert!(out.status.success(), "curl: {:?}", out.status);
    assert_eq!(common::sha256(&out.stdout), want);
    lb.stop().await;
}
