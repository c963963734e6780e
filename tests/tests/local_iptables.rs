//! End to end: `meshwork iptables` (the init container's program) inside a
//! fresh network namespace installs Istio's nat rules, installing twice
//! leaves one copy, `--cleanup` removes every ISTIO chain and jump, and bad
//! flags are refused with a message before anything changes.
//!
//! Requirements: root, iproute2, iptables. Without them the test prints why
//! and passes.

use meshwork_e2e::binary::meshwork;
use meshwork_e2e::netns::{Netns, skip_reason};
use meshwork_e2e::pod::{path, text};

#[test]
fn installs_reinstalls_and_cleans_istio_rules() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let bin = meshwork();
    let ns = Netns::create("mw-ipt");
    let mw = |args: &[&str]| {
        let mut argv = vec![path(&bin), "iptables"];
        argv.extend_from_slice(args);
        ns.output(argv)
    };
    for _ in 0..2 {
        let o = mw(&[
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            "1337",
            "-m",
            "REDIRECT",
            "-i",
            "*",
            "-b",
            "*",
            "-d",
            "15090,15021,15020",
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let save = || -> String {
        ns.run(["iptables-save", "-t", "nat"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let nat = save();
    for rule in [
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
    ] {
        assert_eq!(
            nat.matches(&format!("{rule}\n")).count(),
            1,
            "{rule} once in:\n{nat}"
        );
    }

    let dry = mw(&["--dry-run", "-x", "10.0.0.1/32"]);
    assert!(text(&dry.stdout).contains("-A ISTIO_OUTPUT -d 10.0.0.1/32 -j RETURN"));

    let bad = mw(&["-m", "TPROXY"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("REDIRECT"),
        "{}",
        text(&bad.stderr)
    );
    assert_eq!(save(), nat, "a refused run changes nothing");

    let o = mw(&["--cleanup"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let after = save();
    assert!(!after.contains("ISTIO"), "{after}");
}
