//! The controller as setup sees it: who runs dffmpeg, who a play logs in
//! as, and the controller's address as the nodes see it (for the `from=`
//! of its key and the `host: local` nodes' address).

use crate::inventory::{Host, Inventory, Node};

/// The user running dffmpeg (the login user of `host: local` nodes, and
/// ssh's default user).
pub fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or NULL; the
    // name is copied out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            if let Ok(s) = std::ffi::CStr::from_ptr((*pw).pw_name).to_str() {
                return s.to_string();
            }
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

/// Who the play logs in as on `node`.
pub fn login_user(node: &Node) -> String {
    match (&node.host, &node.user) {
        (Host::Local, _) | (_, None) => current_user(),
        (Host::Remote(_), Some(u)) => u.clone(),
    }
}

/// This machine's source address toward `peer` (an IP address), from the
/// routing table: no packet is sent.
pub fn local_source_address(peer: &str) -> Option<String> {
    peer.parse::<std::net::IpAddr>().ok()?;
    let out = crate::process::std_command("ip")
        .args(["-o", "route", "get", peer])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = text.split_whitespace();
    while let Some(word) = w.next() {
        if word == "src" {
            return w.next().map(str::to_string);
        }
    }
    None
}

/// The controller's address as `node` sees it (for the `from=` of its
/// key): this machine's source address toward the node's host, resolved.
/// `None` for `host: local` or when it cannot be told.
pub fn controller_address_toward(node: &Node) -> Option<String> {
    use std::net::ToSocketAddrs;
    let Host::Remote(h) = &node.host else { return None };
    let ip = (h.as_str(), node.port).to_socket_addrs().ok()?.next()?.ip();
    local_source_address(&ip.to_string())
}

/// A remote host of the inventory (the storage node's first): `host: local`
/// nodes are seen by the others at this machine's address toward it.
pub fn local_peer(inventory: &Inventory) -> Option<String> {
    inventory.storage_node().into_iter().chain(inventory.nodes.iter()).find_map(|n| match &n.host {
        Host::Remote(h) => Some(h.clone()),
        Host::Local => None,
    })
}
