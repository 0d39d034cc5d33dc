//! The files a package installs beside the binary, made from what the binary already knows:
//! `tftplb.8` from the command line's definitions (clap_mangen), `tftplb.toml.5` from the
//! commented example configuration (every key with its default and its comment), and shell
//! completions (clap_complete). `tftplb manual --out DIR` writes them; the package ships
//! the copies in `debian/`, which `tests/package.rs` keeps equal to what the binary writes.
//! The command line's definitions come in as a `clap::Command`, so this imports nothing of ours.

use std::io;
use std::path::Path;

use clap::Command;
use clap_complete::Shell;

/// The example configuration, installed as `/etc/tftplb/tftplb.toml`.
pub const EXAMPLE_CONFIG: &str = include_str!("../config/tftplb.example.toml");

/// Every file `tftplb manual` writes for the command line `cmd`, by name: `tftplb.8` and one
/// page per subcommand (`tftplb-run.8`, ...), `tftplb.toml.5`, and one completion per shell.
pub fn files(cmd: &Command) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = cmd.clone();
    cmd.build();
    let mut out = vec![("tftplb.8".to_string(), command_page(cmd.clone())?)];
    for sub in cmd.get_subcommands() {
        let name = format!("tftplb-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .bin_name(name.replace('-', " "));
        out.push((format!("{name}.8"), subcommand_page(page)?));
    }
    out.push((
        "tftplb.toml.5".to_string(),
        config_page(EXAMPLE_CONFIG).into_bytes(),
    ));
    for (shell, name) in [
        (Shell::Bash, "tftplb.bash"),
        (Shell::Zsh, "_tftplb"),
        (Shell::Fish, "tftplb.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "tftplb", &mut buf);
        out.push((name.to_string(), buf));
    }
    Ok(out)
}

/// Writes [`files`] into `dir`.
pub fn write(dir: &Path, cmd: &Command) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in files(cmd)? {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// `tftplb(8)`: the command line, its subcommands and their options.
fn command_page(cmd: Command) -> io::Result<Vec<u8>> {
    let cmd = cmd.after_long_help(
        "The configuration file is described in tftplb.toml(5). SIGHUP reloads it; \
         SIGTERM stops admitting transfers and lets running ones finish.",
    );
    subcommand_page(cmd)
}

/// A page of section 8 for `cmd` as clap describes it.
fn subcommand_page(cmd: Command) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .manual("System Manager's Manual")
        .render(&mut buf)?;
    Ok(buf)
}

/// `tftplb.toml(5)` from the example configuration: its opening comments are the
/// description; each section's comments introduce it; each key is an entry with its default
/// and the comment above it; a commented-out key (`# token_file = ...`) is an entry without
/// a default; other comment blocks stay paragraphs (indented lines kept as they are).
pub fn config_page(example: &str) -> String {
    let mut page = Page::default();
    page.line(&format!(
        ".TH TFTPLB.TOML 5 \"\" \"tftplb {}\" \"File Formats Manual\"",
        env!("CARGO_PKG_VERSION")
    ));
    page.line(".SH NAME");
    page.line("tftplb.toml \\- configuration of tftplb, the TFTP load balancer");
    page.line(".SH SYNOPSIS");
    page.line("/etc/tftplb/tftplb.toml");
    page.line(".SH DESCRIPTION");
    let mut comments: Vec<&str> = Vec::new();
    for line in example.lines().map(str::trim_end) {
        if let Some(text) = line.strip_prefix('#') {
            comments.push(text.strip_prefix(' ').unwrap_or(text));
        } else if line.is_empty() {
            page.block(&std::mem::take(&mut comments));
        } else if line.starts_with('[') {
            page.section(line, &std::mem::take(&mut comments));
        } else {
            page.entry(line, &std::mem::take(&mut comments), true);
        }
    }
    page.block(&comments);
    page.line(".SH SEE ALSO");
    page.line("tftplb(8)");
    page.text
}

/// The roff being written, and which sections and keys it already has (a section the
/// example repeats, `[[pool.backend]]` say, adds only keys not yet shown).
#[derive(Default)]
struct Page {
    text: String,
    section: String,
    seen: std::collections::HashSet<String>,
}

impl Page {
    fn line(&mut self, roff: &str) {
        self.text.push_str(roff);
        self.text.push('\n');
    }

    /// A comment block before a blank line: an entry when it ends in a commented-out key,
    /// else paragraphs.
    fn block(&mut self, comments: &[&str]) {
        match comments.split_last() {
            Some((last, text)) if is_key(last) && !comments.iter().any(|c| c.starts_with('[')) => {
                self.entry(last, text, false)
            }
            _ => self.paragraphs(comments),
        }
    }

    fn section(&mut self, header: &str, comments: &[&str]) {
        let name = header.trim_matches(['[', ']']).to_string();
        if self.seen.insert(format!("[{name}]")) {
            self.line(&format!(".SS {}", escape(header)));
        }
        self.section = name;
        self.paragraphs(comments);
    }

    /// A key with its comment; `set` when the example gives it a value (its default).
    fn entry(&mut self, line: &str, comments: &[&str], set: bool) {
        let assignment = without_comment(line);
        let key = assignment.split('=').next().unwrap_or("").trim();
        if !self.seen.insert(format!("{}.{key}", self.section)) {
            return;
        }
        self.line(".TP");
        // Inline bold, not `.B`: a macro's arguments would lose the value's quotes.
        self.line(&format!("\\fB{}\\fR", escape(assignment.trim())));
        if !set {
            self.line("(not set by default)");
            self.line(".br");
        }
        self.fill(comments);
    }

    fn paragraphs(&mut self, comments: &[&str]) {
        if comments.iter().any(|c| !c.is_empty()) {
            self.line(".PP");
            self.fill(comments);
        }
    }

    /// Comment lines as running text; indented ones and TOML examples as they are.
    fn fill(&mut self, comments: &[&str]) {
        let mut verbatim = false;
        for c in comments {
            let keep = c.starts_with("  ") || c.starts_with('[') || is_key(c);
            if keep != verbatim {
                self.line(if keep { ".nf" } else { ".fi" });
                verbatim = keep;
            }
            if c.is_empty() {
                self.line(if verbatim { "" } else { ".sp" });
            } else {
                self.line(&escape(c));
            }
        }
        if verbatim {
            self.line(".fi");
        }
    }
}

/// `key = value`, as a line of the example or a commented-out one.
fn is_key(line: &str) -> bool {
    let Some((key, _)) = line.split_once(" = ") else {
        return false;
    };
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A key line without its trailing comment (`name = "pvs"   # pvs.boot.example.internal.`).
fn without_comment(line: &str) -> &str {
    line.find("  #").map_or(line, |i| &line[..i])
}

/// Text made safe for roff: backslashes escaped, a control character at the start of a line
/// disarmed, hyphens as minus signs (options and key names are typed as written).
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_the_example_has_an_entry_with_its_comment() {
        let page = config_page(EXAMPLE_CONFIG);
        for key in [
            "listen = [\"0.0.0.0:69\"]",
            "setup_timeout = \"700ms\"",
            "max_sessions_per_client = 16",
            "addresses = [\"10.0.0.10\", \"10.0.0.20\"]",
            "token_file = \"/etc/tftplb/admin.token\"",
            "ipv6_prefix = 56",
        ] {
            let entry = format!("\\fB{}\\fR\n", escape(key));
            assert!(page.contains(&entry), "{entry} missing");
        }
        assert!(page.contains(".SS [[pool.backend]]"));
        assert_eq!(page.matches(".SS [[pool.backend]]").count(), 1);
        assert_eq!(
            page.matches("\\fBweight = 1").count(),
            1,
            "a repeated key once"
        );
        let after_timeout = page.split("\\fBsetup_timeout = \"700ms\"\\fR\n").nth(1);
        assert!(after_timeout.unwrap().starts_with("How long a backend has"));
        assert!(
            page.contains(".nf\n[[route]]\n"),
            "route examples kept as written"
        );
    }

    #[test]
    fn roff_control_characters_are_disarmed() {
        let page = config_page("# .hidden and \\ and -x\nkey = 1\n");
        assert!(page.contains("\\&.hidden and \\e and \\-x"), "{page}");
    }
}
