//! The blog's cluster on real kernels: `dffmpeg setup` and `dffmpeg transcode` over the
//! real kernel NFS server and client, in two VMs (tests/vm/README.md).
//!
//! * `ctl` is the blog's Pi 3B: controller + storage + compute, where dffmpeg runs as `pi`
//!   (`host: local`); `cmp` is the Pi 2B, a compute node by address. Both are stock: user
//!   `pi` / `raspberry` with passwordless sudo and no key, no NFS package, apt sources that
//!   lead nowhere; the signed test mirror is served on the bridge (its key trusted).
//!
//! In order, each step printed with its time:
//! 1. `dffmpeg setup inventory.yaml --ask-pass` (the password on stdin) installs and starts
//!    the real NFS server, exports the shared directory to cmp's address only, writes cmp's
//!    fstab lines and mounts them with the real mount.nfs; pi on cmp writes through the
//!    mount and the file is pi's on ctl; root on cmp is squashed; nothing world-writable.
//! 2. cmp reboots: the NFS mounts are back by themselves (systemd automounts, NFS mounted at
//!    the first access); 2b. also when cmp boots while the storage node does not serve yet
//!    (the cluster powered on together), once the NFS server is there.
//! 3. A second `setup` reports `changed=0` on both VMs.
//! 4. `dffmpeg transcode` with `storage: nfs`: frame-exact output, cmp did chunks.
//! 5. The NFS server is stopped in the middle of a job (after its first chunk_done, while cmp
//!    encodes) and started again a few seconds later: the job recovers (frame-exact output,
//!    every kept chunk whole) or fails with a clear message and no output; either way a
//!    re-run resumes from the kept chunks and the output is frame-exact.
//! 6. `cluster.watch` added to the inventory: `setup --only watch` installs, enables and
//!    starts the watch service (real systemd); a clip put into upload/ comes out in
//!    output/, frame-exact; `systemctl stop` ends it cleanly (SIGTERM).
//!
//! A VM test: runs only with DFFMPEG_VM_TESTS=1, as root, alone (TCG: minutes):
//! `DFFMPEG_VM_TESTS=1 cargo test --test it vm_cluster:: -- --nocapture`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::aptmirror::AptMirror;
use crate::common::picluster::{exportfs_entries, Run};
use crate::common::run::nodes_with_chunks;
use crate::common::vm::{self, log, q, step, VmLab};
use serde_json::Value as Json;

/// Not vm_smoke's port: a leftover server of one never blocks the other.
const MIRROR_PORT: u16 = 8061;
const SHARED: &str = "/srv/dffmpeg";
const INVENTORY: &str = "/home/pi/inventory.yaml";
const SUBDIRS: [(&str, &str); 3] = [("upload", "ro"), ("work", "rw"), ("output", "ro")];
/// The whole test, image build included, should stay under this (printed, not asserted:
/// the machine is shared).
const BUDGET: Duration = Duration::from_secs(15 * 60);
/// How long the NFS server stays stopped in step 5.
const OUTAGE: Duration = Duration::from_secs(8);

/// `more` goes into the `cluster:` section.
fn inventory(mirror: &str, cmp_ip: &str, more: &str) -> String {
    format!(
        "# The blog's cluster: the Pi 3B runs dffmpeg and holds the shared directory.\n\
         cluster:\n  shared_dir: {SHARED}\n  storage: nfs\n  apt_mirror: {mirror}\n{more}\
         defaults: {{ user: pi, become: true }}\n\
         nodes:\n  ctl: {{ host: local, roles: [controller, compute, storage] }}\n  \
         cmp: {{ host: {cmp_ip}, roles: [compute] }}\n"
    )
}

/// `dffmpeg ARGS` as pi on ctl (a login shell in pi's home), `input` on its stdin.
fn dffmpeg(lab: &VmLab, args: &str, input: &[u8]) -> Run {
    let t = Instant::now();
    let out = lab.ssh_as("ctl", vm::USER, &format!("dffmpeg {args}"), input);
    let run = Run::ended(&out, t);
    eprintln!("=== ctl$ dffmpeg {args}\n{run}");
    run
}

/// Exit 0 and one clean recap line per VM; returns the changed counts (ctl, cmp).
fn assert_clean(r: &Run) -> (u32, u32) {
    let changed = r.assert_clean(&["ctl", "cmp"]);
    (changed[0], changed[1])
}

/// As pi in a VM (login shell); the output, whatever the exit status.
fn as_pi(lab: &VmLab, name: &str, cmd: &str) -> std::process::Output {
    lab.ssh_as(name, vm::USER, cmd, b"")
}

fn as_pi_ok(lab: &VmLab, name: &str, cmd: &str) -> String {
    vm::ok(as_pi(lab, name, cmd), &format!("{name}: as pi: {cmd}"))
}

/// `/proc/mounts` entries under the shared directory: (source, target, type, options).
fn nfs_mounts(lab: &VmLab, name: &str) -> Vec<(String, String, String, String)> {
    lab.ssh_root_ok(name, "cat /proc/mounts")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 4 && f[1].starts_with(&format!("{SHARED}/")))
                .then(|| (f[0].to_string(), f[1].to_string(), f[2].to_string(), f[3].to_string()))
        })
        .collect()
}

/// The three NFS mounts of cmp, from ctl, with the export's mode — real NFS (`nfs4`);
/// systemd's automount points (`autofs`, after a boot) may sit under them.
fn assert_mounted(lab: &VmLab, ctl_ip: &str) {
    let m = nfs_mounts(lab, "cmp");
    let mut want: Vec<(String, String, String)> = SUBDIRS
        .iter()
        .map(|(d, mode)| (format!("{ctl_ip}:{SHARED}/{d}"), format!("{SHARED}/{d}"), mode.to_string()))
        .collect();
    want.sort();
    let mut got: Vec<(String, String, String)> = m
        .iter()
        .filter(|(_, _, fstype, _)| fstype != "autofs")
        .map(|(src, dst, fstype, opts)| {
            assert!(fstype == "nfs4" || fstype == "nfs", "{dst}: type {fstype}, not NFS: {m:?}");
            (src.clone(), dst.clone(), opts.split(',').next().unwrap_or("").to_string())
        })
        .collect();
    got.sort();
    assert_eq!(got, want, "cmp's NFS mounts: {m:?}");
}

/// Right after a boot: systemd's automount points at the three paths, nothing mounted
/// over them yet, no unit failed (the boot did not wait for the storage node).
fn assert_automount_armed(lab: &VmLab) {
    let m = nfs_mounts(lab, "cmp");
    let mut got: Vec<(String, String)> = m.iter().map(|(_, dst, t, _)| (dst.clone(), t.clone())).collect();
    got.sort();
    let mut want: Vec<(String, String)> =
        SUBDIRS.iter().map(|(d, _)| (format!("{SHARED}/{d}"), "autofs".to_string())).collect();
    want.sort();
    assert_eq!(got, want, "cmp after the boot: {m:?}");
    let failed = lab.ssh_root_ok("cmp", "systemctl --failed --no-legend --plain");
    assert!(failed.trim().is_empty(), "failed units on cmp after the reboot:\n{failed}");
}

/// How long the boot itself took (the rest of a reboot is the shutdown and the wait).
fn log_boot(lab: &VmLab, name: &str) {
    let a = lab.ssh_root_ok(name, "systemd-analyze 2>&1 | head -1");
    log(format_args!("[vm] {name}: {}", a.trim()));
}

/// The shared paths as a job uses them on cmp: as pi, each directory read once.
fn use_shares(lab: &VmLab) {
    let dirs: Vec<String> = SUBDIRS.iter().map(|(d, _)| format!("{SHARED}/{d}")).collect();
    as_pi_ok(lab, "cmp", &format!("ls {} >/dev/null", dirs.join(" ")));
}

/// JSON events of a `--json` run.
fn events(text: &str) -> Vec<Json> {
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Decoded video frames of a file on ctl (ffprobe in the VM).
fn frames(lab: &VmLab, path: &str) -> u64 {
    let out = lab.ssh_root_ok(
        "ctl",
        &format!(
            "ffprobe -v error -select_streams v:0 -count_frames -show_entries stream=nb_read_frames -of csv=p=0 {}",
            q(path)
        ),
    );
    out.trim().trim_end_matches(',').parse().unwrap_or_else(|_| panic!("frame count of {path}: {out:?}"))
}

/// Decodes a file on ctl completely: no error from any stream.
fn assert_decodes_cleanly(lab: &VmLab, path: &str) {
    let err = lab.ssh_root_ok("ctl", &format!("ffmpeg -nostdin -v error -i {} -f null - 2>&1", q(path)));
    assert!(err.trim().is_empty(), "{path} does not decode cleanly:\n{err}");
}

/// A job that ended well: its output on ctl holds every frame of the input
/// and decodes cleanly, and its job directory is gone.
fn assert_finished(lab: &VmLab, output: &str, in_frames: u64, when: &str) {
    assert_eq!(frames(lab, output), in_frames, "frame-exact{when}");
    assert_decodes_cleanly(lab, output);
    let left = lab.ssh_root_ok("ctl", &format!("ls -A {SHARED}/work"));
    assert!(left.trim().is_empty(), "job directory left{when}: {left}");
}

fn transcode_args(input: &str, output: &str, extra: &str) -> String {
    format!(
        "transcode -I {INVENTORY} --json --chunk 1 {extra} -o {} {} -c:v mpeg4 -q:v 5 -c:a aac",
        q(output),
        q(input)
    )
}

#[test]
fn the_blogs_cluster_on_real_kernels() {
    if !vm::enabled("vm_cluster") {
        return;
    }
    let t0 = Instant::now();
    let mut times: Vec<(&str, Duration)> = Vec::new();
    let mut timed = |label: &'static str, t: Instant| {
        times.push((label, t.elapsed()));
    };

    // --- 0. The VMs, the mirror, dffmpeg on ctl.
    let t = Instant::now();
    let lab = VmLab::up(&["ctl", "cmp"]);
    timed("image + boot 2 VMs", t);
    let (ctl_ip, cmp_ip) = (lab.ip("ctl").to_string(), lab.ip("cmp").to_string());
    assert!(ctl_ip.starts_with("198.18.60.") && cmp_ip.starts_with("198.18.60."));
    let t = Instant::now();
    let mirror = step("apt mirror on the gateway, its key trusted in both VMs", || {
        let mirror = AptMirror::serve(vm::GATEWAY, MIRROR_PORT);
        for name in ["ctl", "cmp"] {
            lab.trust_apt_key(name, &mirror.key);
            // Stock: no NFS package, no key for pi.
            let out = lab.ssh_root(name, "dpkg -s nfs-common nfs-kernel-server rpcbind");
            assert!(!out.status.success(), "{name}: NFS packages in the image");
            lab.ssh_root_ok(name, "test ! -e /home/pi/.ssh/authorized_keys");
        }
        mirror
    });
    lab.copy_to("ctl", env!("CARGO_BIN_EXE_dffmpeg"), "/usr/local/bin/dffmpeg");
    lab.ssh_root_ok(
        "ctl",
        &format!(
            "cat > {INVENTORY} <<'EOF'\n{}EOF\nchown pi: {INVENTORY}",
            inventory(&mirror.url, &cmp_ip, "")
        ),
    );
    timed("mirror, key, binary, inventory", t);

    // --- 1. First bring-up, the password asked once (on stdin).
    let t = Instant::now();
    let first = step("1. dffmpeg setup --ask-pass (first bring-up)", || {
        dffmpeg(
            &lab,
            &format!("setup {INVENTORY} --ask-pass --accept-new-host-keys"),
            format!("{}\n", vm::PASSWORD).as_bytes(),
        )
    });
    let (c_ctl, c_cmp) = assert_clean(&first);
    assert!(c_ctl > 0 && c_cmp > 0, "{first}");
    assert!(
        first.stdout.contains("changed: [cmp] install the controller's key with the password"),
        "{first}"
    );
    assert!(mirror.requests().contains("nfs-kernel-server_"), "{}", mirror.requests());
    timed("1. setup --ask-pass", t);

    let t = Instant::now();
    step("1. what setup did, on real kernels", || {
        // The real NFS server runs, enabled for the next boot.
        assert_eq!(
            lab.ssh_root_ok("ctl", "systemctl is-active nfs-server; systemctl is-enabled nfs-server"),
            "active\nenabled\n"
        );
        assert!(lab.ssh_root_ok("ctl", "cat /proc/fs/nfsd/threads").trim().parse::<u32>().unwrap_or(0) > 0);
        // Exported to cmp's address only: upload and output ro, work rw, root squashed.
        let v = lab.ssh_root_ok("ctl", "exportfs -v");
        let mut seen = Vec::new();
        for e in exportfs_entries(&v) {
            assert!(
                e.opts.iter().any(|o| o == "root_squash"),
                "{}: {}: no root_squash:\n{v}",
                e.path,
                e.client
            );
            seen.push((e.path.clone(), e.client.clone(), e.mode().to_string()));
        }
        seen.sort();
        let mut want: Vec<(String, String, String)> =
            SUBDIRS.iter().map(|(d, m)| (format!("{SHARED}/{d}"), cmp_ip.clone(), m.to_string())).collect();
        want.sort();
        assert_eq!(seen, want, "exportfs -v:\n{v}");
        assert!(!v.contains('*') && !v.contains("<world>"), "{v}");

        // cmp: fstab lines, mounted by the real mount.nfs (type nfs4 in /proc/mounts).
        let fstab: Vec<String> = lab
            .ssh_root_ok("cmp", "cat /etc/fstab")
            .lines()
            .filter(|l| l.contains(SHARED))
            .map(str::to_string)
            .collect();
        let want_fstab: Vec<String> = SUBDIRS
            .iter()
            .map(|(d, m)| format!("{ctl_ip}:{SHARED}/{d} {SHARED}/{d} nfs {m},nosuid,nodev,_netdev,nofail,noatime,x-systemd.automount 0 0"))
            .collect();
        assert_eq!(fstab, want_fstab);
        assert_mounted(&lab, &ctl_ip);
        // systemd reread the fstab (the handler): its automount units exist, and its mount
        // units are not stale.
        for (d, _) in SUBDIRS {
            let unit = format!("srv-dffmpeg-{d}");
            assert_eq!(
                lab.ssh_root_ok(
                    "cmp",
                    &format!(
                        "systemctl show -P LoadState {unit}.automount; systemctl show -P NeedDaemonReload {unit}.mount"
                    )
                ),
                "loaded\nno\n",
                "{unit}"
            );
        }

        // The data path: pi on cmp writes through the mount, it is pi's file on ctl, in the
        // shared group; cmp sees it as pi's too (NFSv4 id mapping).
        as_pi_ok(&lab, "cmp", &format!("echo from-cmp > {SHARED}/work/from-cmp"));
        assert_eq!(lab.ssh_root_ok("ctl", &format!("cat {SHARED}/work/from-cmp")), "from-cmp\n");
        assert_eq!(
            lab.ssh_root_ok("ctl", &format!("stat -c '%U %G' {SHARED}/work/from-cmp")),
            "pi dffmpeg\n"
        );
        assert_eq!(as_pi_ok(&lab, "cmp", &format!("stat -c '%U %G' {SHARED}/work/from-cmp")), "pi dffmpeg\n");
        // upload is read-only over NFS; root on cmp is nobody on ctl (root_squash).
        let ro = as_pi(&lab, "cmp", &format!("touch {SHARED}/upload/x"));
        assert!(!ro.status.success(), "pi wrote into the read-only upload export");
        assert!(String::from_utf8_lossy(&ro.stderr).contains("Read-only"), "{ro:?}");
        let squashed = lab.ssh_root("cmp", &format!("touch {SHARED}/work/by-root"));
        assert!(!squashed.status.success(), "root on cmp wrote into work: no root_squash");
        assert!(String::from_utf8_lossy(&squashed.stderr).contains("Permission denied"), "{squashed:?}");
        // Nothing world-writable, on either side of the mount.
        for name in ["ctl", "cmp"] {
            let ww = lab.ssh_root_ok(
                name,
                &format!(
                    "find {SHARED} -xdev -perm -0002 ! -type l; find {SHARED}/work -perm -0002 ! -type l"
                ),
            );
            assert!(ww.trim().is_empty(), "{name}: world-writable: {ww}");
        }
        for d in ["", "/upload", "/work", "/output"] {
            assert_eq!(
                lab.ssh_root_ok("ctl", &format!("stat -c '%a %U %G' {SHARED}{d}")),
                "2775 root dffmpeg\n",
                "{SHARED}{d} on ctl"
            );
        }
    });
    timed("1. checks", t);

    // --- 2. cmp reboots: the mounts come back by themselves (systemd automounts: NFS is
    // mounted at the first access).
    let t = Instant::now();
    let boot_id = lab.ssh_root_ok("cmp", "cat /proc/sys/kernel/random/boot_id");
    lab.reboot("cmp");
    assert_ne!(lab.ssh_root_ok("cmp", "cat /proc/sys/kernel/random/boot_id"), boot_id, "cmp did not reboot");
    log_boot(&lab, "cmp");
    step("2. the NFS mounts are back after the reboot", || {
        assert_automount_armed(&lab);
        assert_eq!(as_pi_ok(&lab, "cmp", &format!("cat {SHARED}/work/from-cmp")), "from-cmp\n");
        use_shares(&lab);
        assert_mounted(&lab, &ctl_ip);
    });
    timed("2. reboot cmp + mounts back", t);

    // --- 2b. The cluster powered on together: cmp boots while the storage node does not
    // serve yet. A mount tried at boot would fail for good after systemd's 90 s; the
    // automount mounts once the server is there.
    // (cmp's NFS mounts go first, as when it was off: with them mounted, its shutdown would
    // wait 90 s for a server that does not answer — systemd's stop timeout.)
    let t = Instant::now();
    let dirs: Vec<String> = SUBDIRS.iter().map(|(d, _)| format!("{SHARED}/{d}")).collect();
    lab.ssh_root_ok("cmp", &format!("umount {}", dirs.join(" ")));
    lab.ssh_root_ok("ctl", "systemctl stop nfs-server");
    lab.reboot("cmp");
    log_boot(&lab, "cmp");
    step("2b. cmp booted without the NFS server; it starts; the mounts come", || {
        assert_automount_armed(&lab);
        lab.ssh_root_ok("ctl", "systemctl start nfs-server");
        assert_eq!(
            as_pi_ok(&lab, "cmp", &format!("cat {SHARED}/work/from-cmp && rm {SHARED}/work/from-cmp")),
            "from-cmp\n"
        );
        use_shares(&lab);
        assert_mounted(&lab, &ctl_ip);
    });
    timed("2b. reboot cmp, storage late", t);

    // --- 3. Nothing to do the second time.
    let t = Instant::now();
    let noop = step("3. dffmpeg setup (no-op re-run)", || dffmpeg(&lab, &format!("setup {INVENTORY}"), b""));
    assert_eq!(assert_clean(&noop), (0, 0), "{noop}");
    timed("3. setup no-op", t);

    // --- 4. A transcode through the shared directory.
    let t = Instant::now();
    let input = format!("{SHARED}/upload/clip.mp4");
    step("4. a clip generated on ctl", || {
        as_pi_ok(
            &lab,
            "ctl",
            &format!(
                "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=320x240:rate=25:duration=8 \
                 -f lavfi -i sine=frequency=440:duration=8 -c:v libx264 -preset ultrafast -g 25 \
                 -pix_fmt yuv420p -c:a aac -shortest {}",
                q(&input)
            ),
        );
    });
    let in_frames = frames(&lab, &input);
    assert!(in_frames >= 150, "input frames {in_frames}");
    let out4 = format!("{SHARED}/output/clip.mkv");
    let tr =
        step("4. dffmpeg transcode, storage nfs", || dffmpeg(&lab, &transcode_args(&input, &out4, ""), b""));
    assert_eq!(tr.code, 0, "{tr}");
    let ev = events(&tr.stdout);
    assert_eq!(nodes_with_chunks(&ev), ["cmp", "ctl"], "both VMs did chunks:\n{tr}");
    assert_finished(&lab, &out4, in_frames, "");
    timed("4. transcode", t);

    // --- 5. The NFS server stops in the middle of a job, and comes back.
    let t = Instant::now();
    let out5 = format!("{SHARED}/output/outage.mkv");
    // --keep: whatever the outcome, the verified chunks stay for the re-run to resume.
    let outage = step("5. transcode while the NFS server stops and starts again", || {
        run_through_outage(&lab, &transcode_args(&input, &out5, "--keep"))
    });
    let ev = events(&outage.stdout);
    let job_dir =
        lab.ssh_root_ok("ctl", &format!("ls -d {SHARED}/work/*/")).trim().trim_end_matches('/').to_string();
    if outage.code == 0 {
        log(format_args!("[vm] 5. the job recovered from the NFS outage"));
        assert_eq!(frames(&lab, &out5), in_frames, "frame-exact after the outage:\n{outage}");
        assert_decodes_cleanly(&lab, &out5);
    } else {
        log(format_args!("[vm] 5. the job failed during the NFS outage (exit {})", outage.code));
        assert_eq!(outage.code, 1, "{outage}");
        assert!(outage.stderr.contains("run the same command again to resume"), "a clear message:\n{outage}");
        let out =
            lab.ssh_root("ctl", &format!("test ! -e {} && test -z \"$(ls -A {SHARED}/output)\"", q(&out5)));
        assert!(out.status.success(), "an output (or a partial one) after a failed job");
    }
    // Every kept chunk is whole: its frames are what its chunk_done said.
    step("5. every verified chunk in the job directory is whole", || {
        let mut checked = 0;
        for e in ev.iter().filter(|e| e["event"] == "chunk_done") {
            let chunk = e["chunk"].as_u64().unwrap();
            let path = format!("{job_dir}/chunk_{chunk:05}.nut");
            assert_eq!(frames(&lab, &path), e["frames"].as_u64().unwrap(), "{path}");
            checked += 1;
        }
        assert!(checked >= 1, "no chunk was done:\n{outage}");
    });
    timed("5. transcode through the outage", t);

    let t = Instant::now();
    lab.ssh_root_ok("ctl", &format!("rm -f {}", q(&out5)));
    let again =
        step("5. the same command again resumes", || dffmpeg(&lab, &transcode_args(&input, &out5, ""), b""));
    assert_eq!(again.code, 0, "{again}");
    let ev = events(&again.stdout);
    let start = ev.iter().find(|e| e["event"] == "job_start").expect("job_start");
    assert!(start["resumed_chunks"].as_u64().unwrap_or(0) >= 1, "nothing resumed: {start}");
    assert_finished(&lab, &out5, in_frames, " after the resume");
    timed("5. re-run resumes", t);

    let t = Instant::now();
    watch_service(&lab, &mirror.url, &input, in_frames);
    timed("6. the watch service", t);

    drop(mirror);
    let t = Instant::now();
    drop(lab);
    timed("down", t);
    let total = t0.elapsed();
    log(format_args!("[vm] vm_cluster: step times:"));
    for (label, d) in &times {
        log(format_args!("[vm]   {label:<34} {:>7.1}s", d.as_secs_f64()));
    }
    log(format_args!(
        "[vm] vm_cluster: total {:.1}s ({} the {} min budget)",
        total.as_secs_f64(),
        if total <= BUDGET { "within" } else { "OVER" },
        BUDGET.as_secs() / 60
    ));
}

/// Step 6: `cluster.watch` in the inventory; `setup --only watch` installs
/// and starts the service on ctl (real systemd); a clip copied into
/// upload/ comes out in output/, frame-exact; the service stops cleanly.
fn watch_service(lab: &VmLab, mirror: &str, clip: &str, in_frames: u64) {
    let watch = "  watch: { args: [-c:v, mpeg4, -q:v, \"5\", -c:a, aac] }\n";
    let with_watch = inventory(mirror, lab.ip("cmp"), watch);
    lab.ssh_root_ok("ctl", &format!("cat > {INVENTORY} <<'EOF'\n{with_watch}EOF\nchown pi: {INVENTORY}"));
    let r = step("6. dffmpeg setup --only watch", || {
        dffmpeg(lab, &format!("setup {INVENTORY} --only watch"), b"")
    });
    assert_eq!(r.code, 0, "{r}");
    let state =
        lab.ssh_root_ok("ctl", "systemctl is-active dffmpeg-watch; systemctl is-enabled dffmpeg-watch");
    assert_eq!(state.split_whitespace().collect::<Vec<_>>(), ["active", "enabled"], "{state}");
    as_pi_ok(
        lab,
        "ctl",
        &format!(
            "cp {} {SHARED}/upload/.part && mv {SHARED}/upload/.part {SHARED}/upload/watched.mp4",
            q(clip)
        ),
    );
    let out = format!("{SHARED}/output/watched.mp4");
    let t = Instant::now();
    while as_pi(lab, "ctl", &format!("test -s {out}")).status.code() != Some(0) {
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "no output from the watch service: {}",
            lab.ssh_root_ok("ctl", "journalctl -u dffmpeg-watch --no-pager | tail -n 30")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // Written under a temporary name and renamed: whole once it appears.
    assert_eq!(frames(lab, &out), in_frames, "frame-exact through the watch service");
    lab.ssh_root_ok("ctl", "systemctl stop dffmpeg-watch");
    let state = lab.ssh_root_ok("ctl", "systemctl show -p Result --value dffmpeg-watch");
    assert_eq!(state.trim(), "success", "a clean stop on SIGTERM");
}

/// Runs `dffmpeg ARGS` (a `--json` transcode) as pi on ctl, reading its events as they
/// come: after the first chunk_done, at a moment cmp is encoding a chunk, the NFS server on
/// ctl is stopped, and started again [`OUTAGE`] later. Returns the run.
fn run_through_outage(lab: &VmLab, args: &str) -> Run {
    let t = Instant::now();
    let mut child = lab
        .ssh_root_command("ctl")
        .arg(format!("exec runuser -l {} -c {}", vm::USER, q(&format!("dffmpeg {args}"))))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    let stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout_pipe = child.stdout.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout_pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stdout = String::new();
    let mut done = 0;
    let mut cmp_running: std::collections::BTreeSet<u64> = Default::default();
    let mut stopped: Option<Instant> = None;
    let mut restarted = false;
    let restart = || {
        step("5. systemctl start nfs-server", || lab.ssh_root_ok("ctl", "systemctl start nfs-server"));
    };
    loop {
        let line = match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(line) => Some(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(line) = line {
            stdout.push_str(&line);
            stdout.push('\n');
            if let Ok(e) = serde_json::from_str::<Json>(&line) {
                let attempt = e["attempt"].as_u64().unwrap_or(u64::MAX);
                let kind = e["event"].as_str().unwrap_or("");
                if kind != "progress" && kind != "chunk_progress" {
                    log(format_args!("[vm] 5. {:>5.1}s {line}", t.elapsed().as_secs_f64()));
                }
                match kind {
                    "chunk_start" if e["node"] == "cmp" => {
                        cmp_running.insert(attempt);
                    }
                    "chunk_done" => {
                        done += 1;
                        cmp_running.remove(&attempt);
                    }
                    "chunk_failed" | "chunk_cancelled" => {
                        cmp_running.remove(&attempt);
                    }
                    _ => {}
                }
                if stopped.is_none() && done >= 1 && !cmp_running.is_empty() {
                    step("5. systemctl stop nfs-server (cmp is encoding a chunk)", || {
                        lab.ssh_root_ok("ctl", "systemctl stop nfs-server")
                    });
                    stopped = Some(Instant::now());
                }
            }
        }
        if let (Some(s), false) = (stopped, restarted) {
            if s.elapsed() >= OUTAGE {
                restart();
                restarted = true;
            }
        }
    }
    if stopped.is_some() && !restarted {
        restart();
    }
    let _ = out_reader.join();
    let status = child.wait().expect("ssh wait");
    let stderr = err_reader.join().unwrap_or_default();
    let run = Run { code: status.code().unwrap_or(-1), stdout, stderr, secs: t.elapsed().as_secs_f64() };
    eprintln!("=== ctl$ dffmpeg {args}\n{run}");
    assert!(stopped.is_some(), "the NFS server was never stopped: no chunk_done while cmp encoded:\n{run}");
    // The server is back (for the re-run).
    assert_eq!(lab.ssh_root_ok("ctl", "systemctl is-active nfs-server"), "active\n");
    run
}
