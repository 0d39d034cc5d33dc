//! Real PXE firmware finds tftplb by its ProxyDHCP, without touching the DHCP server: in
//! network namespaces `tests/pxe_boot.sh` creates, dnsmasq hands out addresses only, tftplb
//! answers the PXE part and relays the boot file from tftpd-hpa, and a qemu guest (TCG) boots.
//!
//! - BIOS: SeaBIOS with the iPXE ROM runs the iPXE script tftplb offered, fetched through it;
//! - UEFI: OVMF's own PXE downloads the EFI file tftplb offered, whole, through it;
//! - a MAC no route registers gets no answer (capture, counters) and is listed unregistered;
//! - after a reload adds a catch-all rule with a 2 s delay, the same machine is answered 2 s
//!   or more after its DISCOVER, and boots.
//!
//! Needs root, `ip netns`, qemu-system-x86 with ipxe-qemu and ovmf, dnsmasq, tcpdump,
//! in.tftpd, curl and python3: skipped with the reason where they are missing, but never under
//! CI (`CI=true`), where .ci/run installs them. One guest at a time: TCG loads a core.

mod common;

use std::path::Path;
use std::process::Command;

const TOOLS: &[&str] = &[
    "ip",
    "qemu-system-x86_64",
    "dnsmasq",
    "tcpdump",
    "curl",
    "python3",
];
const FILES: &[&str] = &[
    "/usr/sbin/in.tftpd",
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/OVMF/OVMF_VARS_4M.fd",
    "/usr/lib/ipxe/qemu/efi-e1000.rom",
];

/// Runs one case of the script; its report, once the script's own checks passed.
fn boot(case: &str) -> Option<String> {
    if !common::namespaces::can_run(TOOLS, FILES) {
        return None;
    }
    let mut script = Command::new("bash");
    script
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pxe_boot.sh"))
        .arg(env!("CARGO_BIN_EXE_tftplb"))
        .arg(case);
    let report = common::namespaces::run_script(script);
    assert!(report.contains(&format!("PASS {case}")), "{report}");
    Some(report)
}

#[test]
fn a_registered_bios_machine_boots_the_ipxe_script_tftplb_offers() {
    let Some(report) = boot("bios") else { return };
    assert!(
        report.contains("tftp://10.77.0.2/boot.ipxe... ok"),
        "{report}"
    );
    assert!(
        report.contains("proxy dhcp answers mac=52:54:00:77:00:10"),
        "{report}"
    );
}

#[test]
fn a_registered_uefi_machine_downloads_the_efi_file_tftplb_offers() {
    let Some(report) = boot("uefi") else { return };
    assert!(report.contains("NBP filename is boot-efi.efi"), "{report}");
    assert!(
        report.contains("NBP file downloaded successfully"),
        "{report}"
    );
}

#[test]
fn an_unregistered_machine_gets_no_offer_and_is_listed() {
    let Some(report) = boot("stranger") else {
        return;
    };
    assert!(report.contains("\"outcome\": \"unregistered\""), "{report}");
    assert!(
        !report.contains("proxy dhcp answers mac=52:54:00:77:00:99"),
        "{report}"
    );
}

#[test]
fn a_catch_all_rule_with_a_delay_answers_after_it() {
    let Some(report) = boot("late") else { return };
    let delay: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("late: offer "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offer delay in:\n{report}"));
    assert!(
        delay >= 2.0,
        "offered {delay} s after the DISCOVER:\n{report}"
    );
}
