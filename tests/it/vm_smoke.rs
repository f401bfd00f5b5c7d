//! Proves the VM harness (tests/vm/vmlab.sh, tests/it/common/vm.rs): two VMs boot on the
//! private bridge, `pi` logs in with its password, root with the harness's key, the VMs
//! reach each other and the machine (an apt mirror served there), the dffmpeg binary runs
//! in them, a VM reboots; then everything is removed.
//!
//! A VM test: runs only with DFFMPEG_VM_TESTS=1, as root, alone (it takes minutes; the
//! first run also builds the cached image). Run it with
//! `DFFMPEG_VM_TESTS=1 cargo test --test it vm_smoke:: -- --nocapture`.

use crate::common::aptmirror::AptMirror;
use crate::common::vm::{self, log, ok, step, VmLab};
use std::time::Instant;

const MIRROR_PORT: u16 = 8060;

#[test]
fn two_vms_boot_log_in_reach_each_other_and_reboot() {
    if !vm::enabled("vm_smoke") {
        return;
    }
    let t0 = Instant::now();
    let lab = VmLab::up(&["ctl", "cmp"]);
    let booted = t0.elapsed();
    assert_eq!(lab.ip("ctl"), "198.18.60.11");
    assert_eq!(lab.ip("cmp"), "198.18.60.12");

    step("root logs in with the harness key", || {
        for name in ["ctl", "cmp"] {
            let out = lab.ssh_root_ok(name, "hostname; id -u");
            assert_eq!(out, format!("{name}\n0\n"), "{name}: hostname; id -u");
        }
    });

    step("pi logs in with its password, has passwordless sudo, no key", || {
        for name in ["ctl", "cmp"] {
            let out = lab
                .ssh_password(name, vm::USER, vm::PASSWORD)
                .arg("id -un; id -u; sudo -n id -u; test ! -e ~/.ssh && echo no-key")
                .output()
                .expect("ssh");
            assert_eq!(ok(out, &format!("{name}: pi with password")), "pi\n1000\n0\nno-key\n");
            let out = lab.ssh_password(name, vm::USER, "not-the-password").arg("true").output().expect("ssh");
            assert!(!out.status.success(), "{name}: pi logged in with a wrong password");
        }
    });

    step("the VMs reach each other and the gateway; no route out", || {
        let ctl = lab.ip("ctl").to_string();
        let cmp = lab.ip("cmp").to_string();
        for (name, other) in [("ctl", &cmp), ("cmp", &ctl)] {
            lab.ssh_root_ok(
                name,
                &format!("ping -c1 -W10 {other} >/dev/null && ping -c1 -W10 {} >/dev/null", vm::GATEWAY),
            );
            // Route lookups only: nothing is sent.
            let routes =
                lab.ssh_root_ok(name, "ip route show default; ip -4 route get 203.0.113.1 2>&1 || true");
            assert!(
                routes.contains("unreachable") && !routes.contains("default"),
                "{name}: a route out of the bridge: {routes}"
            );
            // Names of the other VMs resolve (/etc/hosts written by `up`).
            let host = lab.ssh_root_ok(name, "getent hosts ctl cmp gateway");
            assert!(
                host.contains(&ctl) && host.contains(&cmp) && host.contains(vm::GATEWAY),
                "{name}: /etc/hosts: {host}"
            );
        }
    });

    step("no NFS package in the image; apt works from a mirror on the gateway", || {
        let mirror = AptMirror::serve(vm::GATEWAY, MIRROR_PORT);
        for name in ["ctl", "cmp"] {
            let out = lab.ssh_root(name, "dpkg -s nfs-common nfs-kernel-server rpcbind");
            assert!(!out.status.success(), "{name}: NFS packages in the image");
            lab.use_apt_mirror(name, &mirror.url, &mirror.key);
            let out = lab.ssh_root(name, "apt-get update -q");
            let text =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(
                out.status.success() && !text.contains("W:") && !text.contains("E:"),
                "{name}: apt-get update from the test mirror: {text}"
            );
        }
        // Everything the NFS packages need is in the image or in the mirror.
        lab.ssh_root_ok("ctl", "apt-get install -y -q --download-only nfs-kernel-server nfs-common");
        assert!(
            mirror.requests().contains("nfs-kernel-server"),
            "the mirror served no package: {}",
            mirror.requests()
        );
    });

    step("the dffmpeg binary runs in a VM as pi", || {
        lab.copy_to("ctl", env!("CARGO_BIN_EXE_dffmpeg"), "/usr/local/bin/dffmpeg");
        let out = lab.ssh_as("ctl", vm::USER, "dffmpeg --version && ffmpeg -version | head -1", b"");
        let text = ok(out, "ctl: dffmpeg --version as pi");
        assert!(text.contains("dffmpeg") && text.contains("ffmpeg version"), "{text}");
    });

    let t_reboot = Instant::now();
    let boot_id = lab.ssh_root_ok("cmp", "cat /proc/sys/kernel/random/boot_id");
    lab.ssh_root_ok("cmp", "echo kept > /root/marker");
    lab.reboot("cmp");
    let reboot_time = t_reboot.elapsed();
    assert_ne!(lab.ssh_root_ok("cmp", "cat /proc/sys/kernel/random/boot_id"), boot_id, "cmp did not reboot");
    assert_eq!(
        lab.ssh_root_ok("cmp", "cat /root/marker; ip -4 -o addr show eth0 | awk '{print $4}'"),
        "kept\n198.18.60.12/24\n",
        "cmp after the reboot"
    );

    drop(lab);
    step("nothing left: no VM, tap or bridge", || {
        let links = String::from_utf8_lossy(
            &std::process::Command::new("ip").args(["-o", "link", "show"]).output().expect("ip link").stdout,
        )
        .into_owned();
        assert!(!links.contains("dffvm-br") && !links.contains("dfv-"), "left over: {links}");
        let ps = std::process::Command::new("pgrep")
            .args(["-f", "qemu-system-x86_64 -name dffvm-"])
            .output()
            .expect("pgrep");
        assert!(ps.stdout.is_empty(), "qemu left running");
    });
    log(format_args!(
        "[vm] vm_smoke: total {:.1}s (image + boot {:.1}s, reboot {:.1}s)",
        t0.elapsed().as_secs_f64(),
        booted.as_secs_f64(),
        reboot_time.as_secs_f64()
    ));
}
