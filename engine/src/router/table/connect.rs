//! Opening and closing connections: admission limits, the first
//! `connection.established`, and forgetting a connection everywhere.

use super::*;

impl Table {
    pub(in crate::router) fn connect(
        &mut self,
        id: ConnId,
        req: ConnectRequest,
        dropped: Counter,
    ) -> Result<ConnRef, ConnectError> {
        self.make_room(&req)?;
        let channels = match self.access(
            &req.endpoint,
            req.user.as_deref(),
            req.channel_claim.as_deref(),
        ) {
            Access::Channels(channels) => self.channel_sets.share(channels),
            Access::Gone => return Err(ConnectError::UnknownEndpoint(req.endpoint)),
            Access::Withdrawn => return Err(ConnectError::AuthRequired(req.endpoint)),
        };
        let server = &self.snap.config.server;
        let identity = Identity {
            user: req.user,
            ip: req.ip,
            expires_at: req.expires_at,
            channel_claim: req.channel_claim,
        };
        let limits = Limits {
            events: server.send_queue,
            bytes: server.send_queue_bytes,
        };
        let outbox = Outbox::new(limits, dropped);
        let public_id = format!("c-{}", Alphanumeric.sample_string(&mut rand::rng(), 16));
        let conn = Arc::new(Connection::new(
            id,
            public_id,
            &req.endpoint,
            identity,
            outbox,
        ));
        let positions = self.positions_of(channels.iter());
        let established = protocol::established(&protocol::Established {
            connection_id: &conn.public_id,
            endpoint: &conn.endpoint,
            heartbeat_interval_s: server.heartbeat_interval_s,
            user: conn.user.as_deref(),
            expires_at: conn.expires_at().map(protocol::unix_timestamp),
            channels: &positions,
        });
        conn.outbox
            .push_control(Frame::announce(established, &positions, true));
        let subs = self.subscription_sets.share(SubscriptionSet::default());
        let mut sent = SentRecord::default();
        for (name, (_, seq)) in &positions {
            sent.open(name, *seq, &subs);
        }
        self.census.add(&conn);
        self.conns.insert(
            id,
            Entry {
                conn: conn.clone(),
                subs,
                channels,
                sent,
            },
        );
        self.reindex(id);
        if req.events.is_some() || req.since.is_some() {
            match req.events {
                Some(events) => self.subscribe(&conn, &events, req.since.as_ref(), &None),
                None => self.recover_only(&conn, req.since.as_ref()),
            }
        }
        Ok(conn)
    }

    /// Applies `max_anonymous_per_ip` and `max_connections_per_user`
    /// (refusing, or closing the user's oldest connections with "replaced"),
    /// counting the connections `req` says other nodes hold. Only this
    /// node's are closed: when those would not make room, the connection
    /// is refused.
    fn make_room(&mut self, req: &ConnectRequest) -> Result<(), ConnectError> {
        let auth = &self.snap.config.auth;
        if auth.mode == AuthMode::None {
            return Ok(());
        }
        let Some(user) = &req.user else {
            if self.census.anonymous_from(req.ip) + req.elsewhere >= auth.max_anonymous_per_ip {
                return Err(ConnectError::TooManyAnonymous);
            }
            return Ok(());
        };
        let held = self.census.of_user(user);
        let Some(excess) = (held.len() + req.elsewhere + 1)
            .checked_sub(auth.max_connections_per_user)
            .filter(|n| *n > 0)
        else {
            return Ok(());
        };
        if auth.on_user_limit == OnUserLimit::Refuse || excess > held.len() {
            return Err(ConnectError::TooManyForUser);
        }
        let oldest: Vec<ConnRef> = held.iter().take(excess).cloned().collect();
        for conn in oldest {
            self.disconnect(conn.id);
            conn.close(1008, "replaced");
        }
        Ok(())
    }

    pub(in crate::router) fn disconnect(&mut self, id: ConnId) {
        if let Some(entry) = self.conns.remove(&id) {
            self.census.remove(&entry.conn);
            for recipients in self.recipients.values_mut() {
                recipients.remove(&id);
            }
        }
    }
}
