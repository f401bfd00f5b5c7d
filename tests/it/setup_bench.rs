//! Benchmark (not a timed test; run by bench/setup.sh): `dffmpeg setup` on
//! 4 test hosts — pi3 (controller + compute + storage, dffmpeg running on
//! it as pi), two more Raspbian Pis and a Debian trixie box — timing a first
//! bring-up (stock hosts, --ask-pass, apt installs from the test mirror), a
//! no-op re-run and a `--check --diff` run. Each round starts from fresh
//! hosts; prints a Markdown table of min and median.
//!
//! `cargo test --release --test it setup_bench:: -- --ignored --nocapture`
//! (env SETUP_BENCH_ROUNDS, SETUP_BENCH_REPEATS: rounds of fresh hosts, and
//! no-op / check runs per round).

use crate::common::picluster::*;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

fn min_median(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mid = s.len() / 2;
    let median = if s.len() % 2 == 1 { s[mid] } else { (s[mid - 1] + s[mid]) / 2.0 };
    (s[0], median)
}

fn assert_ok(r: &Run, nodes: usize, no_change: bool) {
    assert_eq!(r.code, 0, "{r}");
    let recap = r.recap();
    assert_eq!(recap.len(), nodes, "{r}");
    for (n, v) in recap {
        assert_eq!((v[2], v[3]), (0, 0), "{n}: {r}");
        if no_change {
            assert_eq!(v[1], 0, "{n}: {r}");
        }
    }
}

#[test]
#[ignore = "benchmark: run by bench/setup.sh"]
fn setup_speed_on_four_hosts() {
    let rounds = env_num("SETUP_BENCH_ROUNDS", 3);
    let repeats = env_num("SETUP_BENCH_REPEATS", 5);
    let specs = [
        Spec { name: "pi3", os: Os::RaspbianBookworm, kind: Kind::Controller, uid_offset: 0 },
        Spec { name: "pi2a", os: Os::RaspbianBookworm, kind: Kind::Compute, uid_offset: 0 },
        Spec { name: "pi2b", os: Os::RaspbianBookworm, kind: Kind::Compute, uid_offset: 0 },
        Spec { name: "nuc", os: Os::DebianTrixie, kind: Kind::Compute, uid_offset: 1 },
    ];
    let (mut first, mut noop, mut check) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut c = PiCluster::new("setbn", 92, &specs);
        c.log_runs = false;
        let mut y = format!(
            "cluster:\n  shared_dir: {SHARED_DIR}\n  storage: nfs\n  apt_mirror: {}\ndefaults: {{ user: pi, become: true }}\nnodes:\n  pi3: {{ host: local, roles: [controller, compute, storage] }}\n",
            c.mirror.url
        );
        for s in &specs[1..] {
            y.push_str(&format!("  {}: {{ host: {}, roles: [compute] }}\n", s.name, c.host(s.name).ip));
        }
        c.write_inventory(&y);
        let r = c.setup_ask_pass("--accept-new-host-keys");
        assert_ok(&r, specs.len(), false);
        first.push(r.secs);
        for _ in 0..repeats {
            let r = c.setup("");
            assert_ok(&r, specs.len(), true);
            noop.push(r.secs);
            let r = c.setup("--check --diff");
            assert_ok(&r, specs.len(), true);
            check.push(r.secs);
        }
        eprintln!(
            "round {}: first {:.2} s, no-op {:?}, check {:?}",
            round + 1,
            first[round],
            &noop[noop.len() - repeats..],
            &check[check.len() - repeats..]
        );
    }
    let row = |what: &str, v: &[f64], ansible: &str| {
        let (min, med) = min_median(v);
        format!("| {what} | {min:.2} s | {med:.2} s | {} | {ansible} |", v.len())
    };
    println!("\n| `dffmpeg setup`, 4 hosts | min | median | runs | Ansible (issue 5) |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        row("first bring-up (`--ask-pass`, apt update + NFS packages)", &first, "33–35 s (3 hosts)")
    );
    println!("{}", row("no-op re-run", &noop, "17–21 s (3 hosts), 22–23 s (4 hosts)"));
    println!("{}", row("`--check --diff`", &check, "19–24 s"));
}
