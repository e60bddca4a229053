//! Step 0, before any request: how many connections one client IP may hold open
//! (`gateway.max_connections_per_ip`). An idle-connection flood from one address then costs the
//! gateway a bounded number of descriptors and buffers; other clients are not affected.
//!
//! One lock per accepted connection (not per request), held for a map update.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open client connections by IP.
#[derive(Default)]
pub struct ConnsPerIp {
    cap: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One admitted connection; dropping it gives its place back.
pub struct Admitted {
    conns: Arc<ConnsPerIp>,
    ip: IpAddr,
}

impl ConnsPerIp {
    /// `cap` 0: no cap.
    pub fn new(cap: u32) -> ConnsPerIp {
        ConnsPerIp {
            cap,
            open: Mutex::default(),
        }
    }

    /// A place for one more connection from `ip`, or `None` when it already holds `cap`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        if self.cap == 0 {
            return Some(Admitted {
                conns: self.clone(),
                ip,
            });
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Admitted {
            conns: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip` now.
    #[cfg(test)]
    pub fn open(&self, ip: IpAddr) -> u32 {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.conns.cap == 0 {
            return;
        }
        let mut open = self.conns.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_at_most_cap_connections_and_gets_them_back() {
        let conns = Arc::new(ConnsPerIp::new(2));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = conns.admit(a).expect("first");
        let second = conns.admit(a).expect("second");
        assert!(conns.admit(a).is_none(), "third from the same IP");
        let other = conns.admit(b).expect("another IP is not affected");
        assert_eq!((conns.open(a), conns.open(b)), (2, 1));
        drop(first);
        assert_eq!(conns.open(a), 1);
        let again = conns.admit(a).expect("a place was given back");
        drop((second, again, other));
        assert_eq!((conns.open(a), conns.open(b)), (0, 0));
        assert!(
            conns.open.lock().unwrap().is_empty(),
            "no entry left behind"
        );
    }

    #[test]
    fn zero_means_no_cap() {
        let conns = Arc::new(ConnsPerIp::new(0));
        let ip: IpAddr = "::1".parse().unwrap();
        let held: Vec<_> = (0..1000)
            .map(|_| conns.admit(ip).expect("admitted"))
            .collect();
        assert_eq!(held.len(), 1000);
        assert_eq!(conns.open(ip), 0, "not even counted");
    }
}
