//! Swapping in a new configuration: channels kept or created, routes
//! re-matched, and every connection's access re-decided.

use super::*;

impl Table {
    /// Swaps in a new configuration and re-derives everything from it.
    pub(in crate::router) fn apply(&mut self, snap: Arc<Snapshot>) -> Applied {
        let mut channels = HashMap::new();
        for name in snap.registry.channels().keys() {
            let kept = self.channels.remove(name);
            channels.insert(name.clone(), kept.unwrap_or_else(|| Routed::new(name)));
        }
        self.channels = channels;
        self.routes = sink_routes(&snap);
        self.snap = snap;
        self.recipients.clear();
        let mut applied = Applied::default();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let conn = self.conns[&id].conn.clone();
            let now = match self.access(
                &conn.endpoint,
                conn.user.as_deref(),
                conn.channel_claim.as_deref(),
            ) {
                Access::Channels(now) => now,
                gone_or_withdrawn => {
                    self.disconnect(id);
                    match gone_or_withdrawn {
                        Access::Gone => {
                            conn.close(1001, "endpoint removed by a configuration reload")
                        }
                        _ => conn.close(1008, "access withdrawn by a configuration reload"),
                    }
                    applied.closed += 1;
                    continue;
                }
            };
            let entry = self.conns.get_mut(&id).expect("listed above");
            let gained: Vec<Arc<str>> = now.difference(&entry.channels).cloned().collect();
            let lost: Vec<Arc<str>> = entry.channels.difference(&now).cloned().collect();
            entry.channels = self.channel_sets.share(now);
            for name in &lost {
                match self.channels.get(name) {
                    Some(ch) => entry.sent.close(name, ch.log.sequence()),
                    None => entry.sent.forget(name),
                }
            }
            let positions = self.positions_of(&gained);
            let entry = self.conns.get_mut(&id).expect("listed above");
            for (name, (_, seq)) in &positions {
                entry.sent.open(name, *seq, &entry.subs);
            }
            if !gained.is_empty() {
                let announced = Self::channels_announced(&positions);
                entry.conn.outbox.push_control(announced);
            }
            self.reindex(id);
        }
        applied
    }
}
