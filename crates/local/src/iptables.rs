//! Istio's sidecar interception rules (what `istio-iptables`, the init
//! container, installs): outbound TCP to the proxy's 15001
//! (`ISTIO_OUTPUT` → `ISTIO_REDIRECT`), inbound TCP to 15006
//! (`ISTIO_INBOUND` → `ISTIO_IN_REDIRECT`), the proxy's own traffic (uid
//! and gid 1337) and loopback exempt, and the proxy's own ports (15090,
//! 15021, 15020) never captured. The rules are generated as one
//! `iptables-restore` script for the `nat` table, so they are installed
//! atomically, and removed again by [`cleanup_script`].

use std::io::Write;
use std::process::{Command, Stdio};

/// The settings `istio-iptables` takes (same meanings and defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `-p`: port all outbound TCP is redirected to.
    pub proxy_port: u16,
    /// `-z`: port all inbound TCP is redirected to.
    pub inbound_capture_port: u16,
    /// `-u`: uid of the proxy, whose traffic is not captured.
    pub proxy_uid: u32,
    /// `-g`: gid of the proxy, whose traffic is not captured.
    pub proxy_gid: u32,
    /// `-m`: inbound interception mode (only `REDIRECT` is supported).
    pub inbound_mode: String,
    /// `-b`: inbound ports to capture (`*` = all).
    pub inbound_ports: String,
    /// `-d`: inbound ports never captured (with `-b '*'`).
    pub exclude_inbound_ports: String,
    /// `-i`: outbound destination ranges to capture (`*` = all).
    pub outbound_ranges: String,
    /// `-x`: outbound destination ranges never captured.
    pub exclude_outbound_ranges: String,
    /// `-o`: outbound destination ports never captured.
    pub exclude_outbound_ports: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            proxy_port: 15001,
            inbound_capture_port: 15006,
            proxy_uid: 1337,
            proxy_gid: 1337,
            inbound_mode: "REDIRECT".into(),
            inbound_ports: "*".into(),
            exclude_inbound_ports: "15090,15021,15020".into(),
            outbound_ranges: "*".into(),
            exclude_outbound_ranges: String::new(),
            exclude_outbound_ports: String::new(),
        }
    }
}

/// Settings that cannot be turned into rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// `-m` other than REDIRECT.
    #[error(
        "inbound interception mode {0:?} is not supported; use REDIRECT (TPROXY needs the proxy to keep original source addresses)"
    )]
    Mode(String),
    /// A port list entry is not a port.
    #[error("{flag}: {value:?} is not a port number")]
    Port {
        /// Which flag.
        flag: &'static str,
        /// The entry.
        value: String,
    },
    /// A range list entry is not an IPv4 range.
    #[error("{flag}: {value:?} is not an IPv4 address or range (like 10.0.0.0/8)")]
    Range {
        /// Which flag.
        flag: &'static str,
        /// The entry.
        value: String,
    },
}

/// Chains Istio creates in the nat table.
pub const CHAINS: [&str; 4] = [
    "ISTIO_INBOUND",
    "ISTIO_IN_REDIRECT",
    "ISTIO_OUTPUT",
    "ISTIO_REDIRECT",
];

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

fn ports(flag: &'static str, s: &str) -> Result<Vec<u16>, RuleError> {
    list(s)
        .map(|p| {
            p.parse::<u16>().map_err(|_| RuleError::Port {
                flag,
                value: p.to_string(),
            })
        })
        .collect()
}

fn ranges(flag: &'static str, s: &str) -> Result<Vec<String>, RuleError> {
    list(s)
        .map(|r| {
            let ok = match r.split_once('/') {
                Some((ip, len)) => {
                    ip.parse::<std::net::Ipv4Addr>().is_ok()
                        && len.parse::<u8>().is_ok_and(|l| l <= 32)
                }
                None => r.parse::<std::net::Ipv4Addr>().is_ok(),
            };
            if ok {
                Ok(if r.contains('/') {
                    r.to_string()
                } else {
                    format!("{r}/32")
                })
            } else {
                Err(RuleError::Range {
                    flag,
                    value: r.to_string(),
                })
            }
        })
        .collect()
}

/// The nat-table rules, in `iptables-restore` syntax (without the table
/// header and COMMIT), in the order istio-iptables emits them.
pub fn rules(s: &Settings) -> Result<Vec<String>, RuleError> {
    if !s.inbound_mode.eq_ignore_ascii_case("REDIRECT") {
        return Err(RuleError::Mode(s.inbound_mode.clone()));
    }
    let mut r = Vec::new();
    let (uid, gid) = (s.proxy_uid, s.proxy_gid);
    // Inbound.
    r.push(format!(
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        s.inbound_capture_port
    ));
    let inbound_all = s.inbound_ports.trim() == "*";
    let inbound: Vec<u16> = if inbound_all {
        Vec::new()
    } else {
        ports("-b", &s.inbound_ports)?
    };
    let inbound_capture = inbound_all || !inbound.is_empty();
    if inbound_capture {
        r.push("-A PREROUTING -p tcp -j ISTIO_INBOUND".into());
    }
    if inbound_all {
        // The proxy's own ports (15008 HBONE is never captured either).
        let mut excluded = vec![15008];
        for p in ports("-d", &s.exclude_inbound_ports)? {
            if !excluded.contains(&p) {
                excluded.push(p);
            }
        }
        for p in excluded {
            r.push(format!("-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN"));
        }
        r.push("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".into());
    } else {
        for p in inbound {
            r.push(format!(
                "-A ISTIO_INBOUND -p tcp --dport {p} -j ISTIO_IN_REDIRECT"
            ));
        }
    }
    // Outbound.
    r.push(format!(
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        s.proxy_port
    ));
    r.push("-A OUTPUT -p tcp -j ISTIO_OUTPUT".into());
    for p in ports("-o", &s.exclude_outbound_ports)? {
        r.push(format!("-A ISTIO_OUTPUT -p tcp --dport {p} -j RETURN"));
    }
    // The proxy's connections to its own pod's address (inbound
    // passthrough source 127.0.0.6, and app-to-self through the sidecar).
    r.push("-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN".into());
    for (flag, id) in [("uid", uid), ("gid", gid)] {
        // The proxy calling its own pod's address goes to inbound capture
        // (only when there is one).
        if inbound_capture {
            r.push(format!(
                "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --{flag}-owner {id} -j ISTIO_IN_REDIRECT"
            ));
        }
        r.push(format!(
            "-A ISTIO_OUTPUT -o lo -m owner ! --{flag}-owner {id} -j RETURN"
        ));
        r.push(format!(
            "-A ISTIO_OUTPUT -m owner --{flag}-owner {id} -j RETURN"
        ));
    }
    r.push("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN".into());
    for cidr in ranges("-x", &s.exclude_outbound_ranges)? {
        r.push(format!("-A ISTIO_OUTPUT -d {cidr} -j RETURN"));
    }
    if s.outbound_ranges.trim() == "*" {
        r.push("-A ISTIO_OUTPUT -j ISTIO_REDIRECT".into());
    } else {
        for cidr in ranges("-i", &s.outbound_ranges)? {
            r.push(format!("-A ISTIO_OUTPUT -d {cidr} -j ISTIO_REDIRECT"));
        }
        r.push("-A ISTIO_OUTPUT -j RETURN".into());
    }
    Ok(r)
}

/// The whole `iptables-restore --noflush` script that installs [`rules`]
/// (the ISTIO chains are created, or emptied if they exist).
pub fn install_script(s: &Settings) -> Result<String, RuleError> {
    let mut out = String::from("*nat\n");
    for c in CHAINS {
        out.push_str(&format!(":{c} - [0:0]\n"));
    }
    for rule in rules(s)? {
        out.push_str(&rule);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    Ok(out)
}

/// The `iptables-restore --noflush` script that removes what
/// [`install_script`] added: the jumps from PREROUTING and OUTPUT (given
/// the current `iptables-save -t nat` text, so only rules that exist are
/// deleted) and the ISTIO chains.
pub fn cleanup_script(current_nat: &str) -> String {
    let mut out = String::from("*nat\n");
    for line in current_nat.lines() {
        let jump = line.starts_with("-A PREROUTING ") || line.starts_with("-A OUTPUT ");
        if jump && CHAINS.iter().any(|c| line.ends_with(&format!("-j {c}"))) {
            out.push_str(&line.replacen("-A ", "-D ", 1));
            out.push('\n');
        }
    }
    // Flush every chain before deleting any: they jump to each other.
    let present: Vec<&str> = CHAINS
        .into_iter()
        .filter(|c| {
            current_nat
                .lines()
                .any(|l| l.starts_with(&format!(":{c} ")))
        })
        .collect();
    for c in &present {
        out.push_str(&format!("-F {c}\n"));
    }
    for c in &present {
        out.push_str(&format!("-X {c}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// Why rules could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Bad settings.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// `iptables-restore` / `iptables-save` missing or failing.
    #[error("{0}")]
    Command(String),
}

fn run_restore(script: &str) -> Result<(), ApplyError> {
    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            ApplyError::Command(format!(
                "cannot run iptables-restore ({e}); install iptables (apt-get install iptables)"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| ApplyError::Command(format!("iptables-restore: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| ApplyError::Command(format!("iptables-restore: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ApplyError::Command(format!(
            "iptables-restore failed ({}): {}; are you root in this network namespace?",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The current nat table (`iptables-save -t nat`).
pub fn current_nat() -> Result<String, ApplyError> {
    let out = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .map_err(|e| {
            ApplyError::Command(format!(
                "cannot run iptables-save ({e}); install iptables (apt-get install iptables)"
            ))
        })?;
    if !out.status.success() {
        return Err(ApplyError::Command(format!(
            "iptables-save failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs the rules in the current network namespace, replacing any
/// earlier ISTIO rules (so running it twice is harmless).
pub fn install(s: &Settings) -> Result<(), ApplyError> {
    let script = install_script(s)?;
    uninstall()?;
    run_restore(&script)
}

/// Removes every ISTIO rule and chain from the current network namespace.
pub fn uninstall() -> Result<(), ApplyError> {
    let nat = current_nat()?;
    if CHAINS.iter().any(|c| nat.contains(c)) {
        run_restore(&cleanup_script(&nat))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*'
    /// -x "" -b '*' -d 15090,15021,15020` writes to the nat table (Istio
    /// 1.2x, iptables-save order), with our chain headers.
    const ISTIO_DEFAULT: &str = "\
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001";

    /// Groups rules by chain, keeping the order within each chain (the
    /// order that matters to iptables).
    fn by_chain(rules: &[String]) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut m = std::collections::BTreeMap::<String, Vec<String>>::new();
        for r in rules {
            let chain = r.split_whitespace().nth(1).unwrap().to_string();
            m.entry(chain).or_default().push(r.clone());
        }
        m
    }

    #[test]
    fn default_rules_are_istios() {
        let ours = rules(&Settings::default()).unwrap();
        let istio: Vec<String> = ISTIO_DEFAULT.lines().map(String::from).collect();
        assert_eq!(by_chain(&ours), by_chain(&istio));
    }

    #[test]
    fn include_and_exclude_lists() {
        let s = Settings {
            inbound_ports: "8080, 9090".into(),
            outbound_ranges: "10.96.0.0/12,10.88.0.5".into(),
            exclude_outbound_ranges: "10.88.0.1/32".into(),
            exclude_outbound_ports: "15012".into(),
            ..Settings::default()
        };
        let r = rules(&s).unwrap();
        let chains = by_chain(&r);
        assert_eq!(
            chains["ISTIO_INBOUND"],
            [
                "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT",
                "-A ISTIO_INBOUND -p tcp --dport 9090 -j ISTIO_IN_REDIRECT"
            ]
        );
        let out = &chains["ISTIO_OUTPUT"];
        assert_eq!(out[0], "-A ISTIO_OUTPUT -p tcp --dport 15012 -j RETURN");
        let tail: Vec<&str> = out.iter().rev().take(4).rev().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "-A ISTIO_OUTPUT -d 10.88.0.1/32 -j RETURN",
                "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT",
                "-A ISTIO_OUTPUT -d 10.88.0.5/32 -j ISTIO_REDIRECT",
                "-A ISTIO_OUTPUT -j RETURN"
            ]
        );
    }

    #[test]
    fn no_inbound_ports_means_no_inbound_capture() {
        let s = Settings {
            inbound_ports: "".into(),
            ..Settings::default()
        };
        let r = rules(&s).unwrap();
        assert!(!r.iter().any(|l| l.starts_with("-A PREROUTING")));
        assert!(
            !r.iter()
                .any(|l| l.contains("-A ISTIO_OUTPUT") && l.ends_with("ISTIO_IN_REDIRECT"))
        );
    }

    #[test]
    fn bad_settings_are_errors() {
        let bad = |s: Settings| rules(&s).unwrap_err().to_string();
        assert!(
            bad(Settings {
                inbound_mode: "TPROXY".into(),
                ..Settings::default()
            })
            .contains("REDIRECT")
        );
        assert!(
            bad(Settings {
                exclude_inbound_ports: "15090,http".into(),
                ..Settings::default()
            })
            .contains("\"http\"")
        );
        assert!(
            bad(Settings {
                outbound_ranges: "10.0.0.0/40".into(),
                ..Settings::default()
            })
            .contains("-i")
        );
    }

    #[test]
    fn script_and_cleanup_round_trip() {
        let script = install_script(&Settings::default()).unwrap();
        assert!(script.starts_with("*nat\n:ISTIO_INBOUND - [0:0]\n"));
        assert!(script.ends_with("COMMIT\n"));
        // What iptables-save shows after install, plus someone else's rule.
        let saved = format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:ISTIO_INBOUND - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]\n:ISTIO_OUTPUT - [0:0]\n:ISTIO_REDIRECT - [0:0]\n{ISTIO_DEFAULT}\n-A OUTPUT -d 1.2.3.4/32 -j RETURN\nCOMMIT\n"
        );
        let clean = cleanup_script(&saved);
        assert!(clean.contains("-D PREROUTING -p tcp -j ISTIO_INBOUND\n"));
        assert!(clean.contains("-D OUTPUT -p tcp -j ISTIO_OUTPUT\n"));
        assert!(!clean.contains("1.2.3.4"));
        let last_flush = CHAINS
            .iter()
            .map(|c| clean.find(&format!("-F {c}\n")).unwrap())
            .max();
        let first_delete = CHAINS
            .iter()
            .map(|c| clean.find(&format!("-X {c}\n")).unwrap())
            .min();
        assert!(last_flush < first_delete, "{clean}");
    }
}
