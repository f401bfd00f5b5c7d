//! TEMPORARY: a minimal `Lab` with the same API as the real harness
//! (`Lab::new(tag, net)`, `add_host`, `client_key`, `Host::{exec, exec_ok,
//! kill}`), driving `/work/shared/tools/lab.sh`. Needs root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LAB_SH: &str = "/work/shared/tools/lab.sh";

pub struct Lab {
    tag: String,
    net: u8,
    dir: PathBuf,
    key: PathBuf,
    hosts: Vec<Host>,
}

#[derive(Default, Clone, Debug)]
pub struct HostOpts {
    /// CPU quota in CPUs (0.5 = half a core).
    pub cpus: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub ip: String,
    /// lab.sh's name for it: prefixed with the tag, because lab.sh names
    /// the veth `vd-NAME` and labs run side by side.
    lab_name: String,
    env: Vec<(String, String)>,
}

fn lab_env(tag: &str, net: u8) -> Vec<(String, String)> {
    vec![
        ("LAB_DIR".into(), format!("/tmp/dlab-{tag}")),
        ("LAB_BR".into(), format!("dl-{tag}")),
        ("LAB_NET".into(), format!("198.18.{net}")),
        ("LAB_NS".into(), format!("dl-{tag}")),
    ]
}

fn lab_sh(env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(LAB_SH)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {LAB_SH}: {e}"))
}

impl Lab {
    /// `tag`: 1-6 of `[a-z0-9]`; `net`: third octet of 198.18.<net>.0/24.
    pub fn new(tag: &str, net: u8) -> Lab {
        assert!(
            !tag.is_empty()
                && tag.len() <= 6
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "lab tag {tag:?} must be 1-6 characters of [a-z0-9]"
        );
        let env = lab_env(tag, net);
        lab_sh(&env, &["down"]);
        let dir = PathBuf::from(format!("/tmp/dlab-{tag}-client"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("lab client dir");
        let key = dir.join("client_key");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "dlab"])
            .arg("-f")
            .arg(&key)
            .output()
            .expect("ssh-keygen");
        assert!(out.status.success(), "ssh-keygen failed");
        Lab {
            tag: tag.into(),
            net,
            dir,
            key,
            hosts: Vec::new(),
        }
    }

    pub fn client_key(&self) -> &Path {
        &self.key
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn add_host(&mut self, name: &str, opts: HostOpts) -> Host {
        let env = lab_env(&self.tag, self.net);
        let lab_name = format!("{}{name}", self.tag);
        assert!(lab_name.len() <= 12, "host name {name:?} too long");
        let spec = match opts.cpus {
            Some(c) => format!("{lab_name}:{c}"),
            None => lab_name.clone(),
        };
        let out = lab_sh(&env, &["up", &spec]);
        assert!(
            out.status.success(),
            "lab.sh up {spec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let ip = text
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("lab.sh up printed {text:?}"))
            .to_string();
        let host = Host {
            name: name.into(),
            ip,
            lab_name,
            env,
        };
        let pubkey = fs::read_to_string(self.key.with_extension("pub")).expect("client pubkey");
        host.exec_ok(&format!(
            "mkdir -p /root/.ssh && chmod 700 /root/.ssh && printf '%s\\n' '{}' > /root/.ssh/authorized_keys",
            pubkey.trim()
        ));
        self.hosts.push(host.clone());
        host
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        lab_sh(&lab_env(&self.tag, self.net), &["down"]);
        let _ = fs::remove_dir_all(&self.dir);
        let _ = fs::remove_dir(format!("/tmp/dlab-{}", self.tag));
    }
}

impl Host {
    /// `sh -c script` inside the host (its mounts and network), as root.
    pub fn exec(&self, script: &str) -> Output {
        lab_sh(&self.env, &["exec", &self.lab_name, "sh", "-c", script])
    }

    /// Like `exec`, panicking unless it succeeds; returns stdout.
    pub fn exec_ok(&self, script: &str) -> String {
        let out = self.exec(script);
        assert!(
            out.status.success(),
            "host {}: `{script}` failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kill its sshd and everything under it (a node dying).
    pub fn kill(&self) {
        lab_sh(&self.env, &["kill", &self.lab_name]);
    }
}
