//! Who is connected, by user and by anonymous address: what the
//! per-user and per-IP connection limits count.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::connection::{ConnRef, Connection};

/// What the limits count, per user and per anonymous address: what a
/// cluster node leases in the shared store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections per authenticated user.
    pub users: Vec<(String, usize)>,
    /// Anonymous connections per client address.
    pub anonymous: Vec<(IpAddr, usize)>,
}

/// Connections counted for the limits of `[auth]`.
#[derive(Debug, Default)]
pub(super) struct Census {
    /// Each user's connections, oldest first.
    users: HashMap<String, Vec<ConnRef>>,
    /// Anonymous connections per client address.
    anonymous: HashMap<IpAddr, usize>,
}

impl Census {
    /// Counts a new connection.
    pub(super) fn add(&mut self, conn: &ConnRef) {
        match conn.user.as_deref() {
            Some(user) => self
                .users
                .entry(user.to_owned())
                .or_default()
                .push(conn.clone()),
            None => *self.anonymous.entry(conn.ip).or_default() += 1,
        }
    }

    /// Forgets a connection.
    pub(super) fn remove(&mut self, conn: &Connection) {
        match conn.user.as_deref() {
            Some(user) => {
                if let Some(list) = self.users.get_mut(user) {
                    list.retain(|c| c.id != conn.id);
                    if list.is_empty() {
                        self.users.remove(user);
                    }
                }
            }
            None => {
                if let Some(n) = self.anonymous.get_mut(&conn.ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.anonymous.remove(&conn.ip);
                    }
                }
            }
        }
    }

    /// Anonymous connections from `ip`.
    pub(super) fn anonymous_from(&self, ip: IpAddr) -> usize {
        self.anonymous.get(&ip).copied().unwrap_or(0)
    }

    /// How many connections each user holds, and each address anonymously.
    pub(super) fn counts(&self) -> Counts {
        Counts {
            users: self
                .users
                .iter()
                .map(|(user, list)| (user.clone(), list.len()))
                .collect(),
            anonymous: self.anonymous.iter().map(|(ip, n)| (*ip, *n)).collect(),
        }
    }

    /// A user's connections, oldest first.
    pub(super) fn of_user(&self, user: &str) -> &[ConnRef] {
        self.users.get(user).map_or(&[], Vec::as_slice)
    }
}
