//! Network hosts for the tests that need more than loopback: a bridge and
//! network namespaces joined to it by veth pairs, each with an address of its
//! own, optionally a hosts file (`/etc/netns/NS/hosts`, which `ip netns exec`
//! mounts over /etc/hosts) naming every host; and the checks for whether they
//! can be made here (root, the tools).
//!
//! In: a name prefix, a tag, a /24 and the hosts' roles. Out: `Hosts`, which
//! removes every link, namespace and hosts file it made on drop, pass or
//! fail. Must not: touch links, namespaces or files it did not make (the
//! `/etc/netns` folder goes only if empty).

use std::path::Path;
use std::process::{Command, Stdio};

/// Run `ip ARGS`; its stderr when it fails.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Whether `tool --version` can be started.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A bridge `{kind}b{tag}` and one namespace `{kind}{tag}{role}` per role,
/// joined to it by veth `{ns}o` (bridge side) / `{ns}i` (inside), with
/// addresses `{net}.1`, `{net}.2`, ... /24; all removed on drop.
pub struct Hosts {
    bridge: String,
    /// (namespace, bridge-side veth, address)
    hosts: Vec<(String, String, String)>,
    /// Whether [`Hosts::name`] wrote `/etc/netns/NS/hosts` files.
    hosts_files: bool,
}

impl Hosts {
    /// The hosts, or why they cannot be made here (not root, an `ip` that
    /// fails). What was made before a failure is removed again.
    pub fn new(kind: &str, tag: &str, net: &str, roles: &[&str]) -> Result<Hosts, String> {
        if !is_root() {
            return Err("not root".into());
        }
        let mut h = Hosts {
            bridge: format!("{kind}b{tag}"),
            hosts: Vec::new(),
            hosts_files: false,
        };
        ip(&["link", "add", &h.bridge, "type", "bridge"])?;
        ip(&["link", "set", &h.bridge, "up"])?;
        for (i, role) in roles.iter().enumerate() {
            let ns = format!("{kind}{tag}{role}");
            let outer = format!("{ns}o");
            let inner = format!("{ns}i");
            let addr = format!("{net}.{}", i + 1);
            ip(&["netns", "add", &ns])?;
            h.hosts.push((ns.clone(), outer.clone(), addr.clone()));
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "master", &h.bridge])?;
            ip(&["link", "set", &outer, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(h)
    }

    /// Give every host the same hosts file: host `i` is called `names[i]`
    /// (its DNS names).
    pub fn name(&mut self, names: &[Vec<String>]) -> Result<(), String> {
        let mut file = String::from("127.0.0.1 localhost\n");
        for ((_, _, addr), n) in self.hosts.iter().zip(names) {
            file.push_str(&format!("{addr} {}\n", n.join(" ")));
        }
        self.hosts_files = true;
        for (ns, _, _) in &self.hosts {
            let dir = Path::new("/etc/netns").join(ns);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
            std::fs::write(dir.join("hosts"), &file).map_err(|e| format!("{dir:?}: {e}"))?;
        }
        Ok(())
    }

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i].0
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> &str {
        &self.hosts[i].2
    }

    /// Cut host `i` off the bridge (`up: false`) or join it again: its
    /// packets are dropped, nothing is closed.
    pub fn link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        if let Err(e) = ip(&["link", "set", &self.hosts[i].1, state]) {
            panic!("{e}");
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (ns, outer, _) in &self.hosts {
            let _ = ip(&["link", "del", outer]);
            let _ = ip(&["netns", "del", ns]);
            if self.hosts_files {
                let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
            }
        }
        if self.hosts_files {
            // Only if empty: another user's hosts files stay.
            let _ = std::fs::remove_dir("/etc/netns");
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
