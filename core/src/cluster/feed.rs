//! Where events stamped in Redis come back into this node: the pub/sub
//! subscription, each channel's continuity, and catching up.
//!
//! Pub/sub is treated as lossy. An event whose sequence skips ahead makes
//! the feed fetch the missing ones from the channel's history stream and
//! hand them in first; what history no longer holds is declared lost
//! (`connection.lagged`). Every heartbeat interval the feed also compares
//! each channel's position in Redis with its own, so a lost *last* event
//! is found too, and an epoch Redis started (it lost the channel's state)
//! is announced. While Redis is out of reach the node is unhealthy; it
//! reconnects with backoff and reports healthy again only once every
//! channel has caught up.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{PubSubSink, PubSubStream};
use redis::streams::StreamRangeReply;

use super::ask;
use super::health::Beat;
use super::leases;
use super::scripts;
use super::sequencer::unix_millis;
use super::{Shared, MAX_BACKOFF};
use crate::router::{fresh_epoch, Loss, Received, Router, Sequenced};
use crate::text::Text;

/// Runs the feed: subscribes, catches up, then follows. Returns once the
/// first catch-up is done (or failed: the node then starts unhealthy and
/// keeps trying), leaving the rest to a task of its own.
pub async fn start(shared: Arc<Shared>, router: &Arc<Router>) {
    let keys = &shared.keys;
    let names = [keys.events(), keys.nodes(), keys.commands()];
    let mut feed = Feed {
        shared,
        router: Arc::downgrade(router),
        positions: scripts::positions(),
        names,
    };
    let first = feed.join().await;
    tokio::spawn(async move { feed.run(first).await });
}

struct Feed {
    shared: Arc<Shared>,
    router: Weak<Router>,
    positions: redis::Script,
    /// The pub/sub channels of events, heartbeats and questions.
    names: [String; 3],
}

/// Why following stopped.
type Broken = String;

/// The pub/sub connection: commands (`PING`) one way, messages the other.
type Subscription = (PubSubSink, PubSubStream);

impl Feed {
    /// Subscribes and catches every channel up; the node is healthy after.
    async fn join(&mut self) -> Result<Subscription, Broken> {
        let keys = &self.shared.keys;
        let mut pubsub = self
            .shared
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| self.shared.unreachable(&e))?;
        let channels = [
            keys.events(),
            keys.nodes(),
            keys.commands(),
            keys.replies(&self.shared.node),
        ];
        pubsub
            .subscribe(&channels)
            .await
            .map_err(|e| self.shared.unreachable(&e))?;
        let mut subscription = pubsub.split();
        self.wake_shared().await?;
        self.catch_up(&mut subscription).await?;
        self.beat().await?;
        self.shared.health.up();
        tracing::info!(node = %self.shared.node, redis = %self.shared.url, "in the cluster");
        Ok(subscription)
    }

    /// Makes the shared connection a live one. After Redis dropped it, its
    /// first command answers the old failure (and starts a reconnection)
    /// even though Redis is back, as the pub/sub connection just showed:
    /// that is not a new outage, and must not cost a round of backoff (up
    /// to 5 s more out of the cluster). The second command waits for the
    /// reconnection.
    async fn wake_shared(&self) -> Result<(), Broken> {
        let mut conn = self.shared.conn.clone();
        let ping = redis::cmd("PING");
        if ping.query_async::<String>(&mut conn).await.is_ok() {
            return Ok(());
        }
        ping.query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| self.shared.unreachable(&e))
    }

    /// Follows pub/sub until the connection breaks, then reconnects with
    /// backoff, for as long as the router lives.
    async fn run(mut self, mut joined: Result<Subscription, Broken>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let broken = match joined {
                Ok(subscription) => {
                    backoff = Duration::from_millis(100);
                    match self.follow(subscription).await {
                        Some(broken) => broken,
                        None => return,
                    }
                }
                Err(broken) => broken,
            };
            tracing::error!(node = %self.shared.node, "out of the cluster: {broken}");
            self.shared.health.down(broken);
            if self.router.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            joined = self.join().await;
        }
    }

    /// Hands in events and heartbeats as they come; beats and checks
    /// positions every heartbeat interval. `None` once the router is gone.
    async fn follow(&mut self, mut subscription: Subscription) -> Option<Broken> {
        let mut tick = tokio::time::interval(self.shared.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = subscription.1.next() => {
                    let Some(message) = message else {
                        return Some(self.closed());
                    };
                    if let Err(broken) = self.on_message(&message).await {
                        return Some(broken);
                    }
                }
                _ = tick.tick() => {
                    if self.router.strong_count() == 0 {
                        return None;
                    }
                    if let Err(broken) =
                        self.catch_up(&mut subscription).await.and(self.beat().await)
                    {
                        return Some(broken);
                    }
                }
            }
        }
    }

    fn closed(&self) -> Broken {
        format!(
            "the pub/sub connection to Redis at {} closed",
            self.shared.url
        )
    }

    /// Hands in one pub/sub message, whatever its channel.
    async fn on_message(&self, message: &redis::Msg) -> Result<(), Broken> {
        let [events, nodes, commands] = &self.names;
        let payload = message.get_payload_bytes();
        let channel = message.get_channel_name();
        if channel == events {
            return self.on_event(payload).await;
        }
        if channel == nodes {
            self.on_beat(payload);
        } else if channel == commands {
            self.on_question(payload);
        } else {
            self.on_answer(payload);
        }
        Ok(())
    }

    /// Hands in every message pub/sub brought before Redis answers a `PING`
    /// on it now: whatever Redis published before this call.
    async fn read_to_now(&self, (sink, stream): &mut Subscription) -> Result<(), Broken> {
        sink.ping::<redis::Value>()
            .await
            .map_err(|e| self.shared.unreachable(&e))?;
        loop {
            // Unconstrained: tokio's cooperative budget would answer
            // "pending" after a hundred or so messages, though more wait.
            match tokio::task::unconstrained(stream.next()).now_or_never() {
                Some(Some(message)) => self.on_message(&message).await?,
                Some(None) => return Err(self.closed()),
                None => return Ok(()),
            }
        }
    }

    fn on_beat(&self, payload: &[u8]) {
        match serde_json::from_slice::<Beat>(payload) {
            Ok(beat) => self.shared.health.heard(beat),
            Err(e) => tracing::warn!("ignored a heartbeat that is not one: {e}"),
        }
    }

    /// Answers another node's question, without holding up the feed.
    fn on_question(&self, payload: &[u8]) {
        let Ok(asked) = serde_json::from_slice::<ask::Asked>(payload) else {
            tracing::warn!("ignored a question that is not one");
            return;
        };
        let Some(router) = self.router.upgrade() else {
            return;
        };
        if asked.from == self.shared.node {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let answered = ask::Answered {
                id: asked.id,
                node: shared.node.clone(),
                answer: ask::answer(&router, Some(&shared.node), &asked.question),
            };
            let text = serde_json::to_string(&answered).expect("an answer serializes");
            let mut conn = shared.conn.clone();
            let _: redis::RedisResult<()> = redis::cmd("PUBLISH")
                .arg(shared.keys.replies(&asked.from))
                .arg(text)
                .query_async(&mut conn)
                .await;
        });
    }

    fn on_answer(&self, payload: &[u8]) {
        match serde_json::from_slice::<ask::Answered>(payload) {
            Ok(answered) => self.shared.pending.deliver(answered),
            Err(e) => tracing::warn!("ignored an answer that is not one: {e}"),
        }
    }

    /// Announces this node on the heartbeat channel, renewing its leases.
    async fn beat(&self) -> Result<(), Broken> {
        let Some(router) = self.router.upgrade() else {
            return Ok(());
        };
        let snap = router.snapshot();
        let beat = Beat {
            node: self.shared.node.clone(),
            config_version: snap.version,
            digest: snap.digest(),
        };
        let text = serde_json::to_string(&beat).expect("a heartbeat serializes");
        leases::renew(&self.shared, &router.census())
            .await
            .map_err(|e| self.shared.unreachable(&e))?;
        let mut conn = self.shared.conn.clone();
        self.shared
            .clock
            .measure(&mut conn)
            .await
            .map_err(|e| self.shared.unreachable(&e))?;
        redis::cmd("PUBLISH")
            .arg(self.shared.keys.nodes())
            .arg(text)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.shared.unreachable(&e))
    }

    /// Hands in one event from pub/sub, after whatever it shows missing.
    async fn on_event(&self, payload: &[u8]) -> Result<(), Broken> {
        let Some(event) = parse(payload, &self.shared.origin) else {
            tracing::warn!("ignored a pub/sub message that is not an event");
            return Ok(());
        };
        self.hand_in(event).await
    }

    async fn hand_in(&self, event: Sequenced) -> Result<(), Broken> {
        let Some(router) = self.router.upgrade() else {
            return Ok(());
        };
        // An epoch this channel has not had is Redis's current one, or one
        // Redis has already left (the message was read late, after this
        // node's position check took the next one): epochs are not
        // ordered, so ask Redis. Taking a left epoch would put the channel
        // behind Redis's, and skip every later event as stale; the next
        // position check takes Redis's.
        if router.is_new_epoch(&event.channel, &event.epoch)
            && self.epoch_in_redis(&event.channel).await? != event.epoch
        {
            return Ok(());
        }
        if let Received::Missing { after } = router.receive(&event) {
            self.fill(
                &router,
                &event.channel,
                &event.epoch,
                after,
                event.sequence - 1,
            )
            .await?;
            router.receive(&event);
        }
        Ok(())
    }

    /// The epoch of `channel` in Redis now (started there if it has none).
    async fn epoch_in_redis(&self, channel: &str) -> Result<String, Broken> {
        Ok(position(&self.positions_in_redis([channel]).await?)?.0)
    }

    /// The epoch and sequence of each of `channels` in Redis now, two
    /// values a channel (each started there if it has no epoch).
    async fn positions_in_redis<'a>(
        &self,
        channels: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<redis::Value>, Broken> {
        let keys = &self.shared.keys;
        let mut call = self.positions.prepare_invoke();
        for name in channels {
            call.key(keys.meta(name))
                .key(keys.stream(name))
                .arg(fresh_epoch());
        }
        let mut conn = self.shared.conn.clone();
        call.invoke_async(&mut conn)
            .await
            .map_err(|e| self.shared.unreachable(&e))
    }

    /// Compares every channel's position in Redis with this node's, starting
    /// the epochs Redis started and filling what this node is behind by.
    /// What pub/sub brought up to then is handed in first: a burst still
    /// being read is not missing, and the history stream may no longer
    /// hold its start, which would be declared lost.
    async fn catch_up(&self, subscription: &mut Subscription) -> Result<(), Broken> {
        let Some(router) = self.router.upgrade() else {
            return Ok(());
        };
        let ours = router.positions();
        let answer = self
            .positions_in_redis(ours.keys().map(String::as_str))
            .await?;
        self.read_to_now(subscription).await?;
        let now = router.positions();
        for ((name, (epoch, sequence)), theirs) in ours.iter().zip(answer.chunks(2)) {
            let (their_epoch, their_sequence) = position(theirs)?;
            let (their_epoch, their_sequence) =
                if their_epoch == *epoch && their_sequence < *sequence {
                    // Only Redis stamps, so a node is never ahead of it:
                    // Redis went back, and its positions cannot be trusted.
                    tracing::error!(
                        channel = %name,
                        "Redis holds sequence {their_sequence} of channel `{name}`'s epoch \
                         {epoch}, behind the {sequence} this node delivered: its state went \
                         back (keys restored from an older copy?); starting a new epoch"
                    );
                    self.restart_epoch(name, epoch, *sequence).await?
                } else {
                    (their_epoch, their_sequence)
                };
            let Some((epoch_now, sequence_now)) = now.get(name) else {
                continue;
            };
            let after = if their_epoch == *epoch_now {
                *sequence_now
            } else if epoch_now != epoch {
                // Pub/sub brought an epoch Redis started after it answered:
                // already later than `their_epoch`.
                continue;
            } else {
                router.start_epoch(name, &their_epoch);
                0
            };
            if their_sequence > after {
                self.fill(&router, name, &their_epoch, after, their_sequence)
                    .await?;
            }
        }
        Ok(())
    }

    /// Starts a new epoch of `channel` in Redis if its sequence there is
    /// still behind `sequence` of `epoch` (see `scripts::restart`); answers
    /// its epoch and sequence there.
    async fn restart_epoch(
        &self,
        channel: &str,
        epoch: &str,
        sequence: u64,
    ) -> Result<(String, u64), Broken> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.conn.clone();
        let answer: Vec<redis::Value> = scripts::restart()
            .key(keys.meta(channel))
            .key(keys.stream(channel))
            .arg(epoch)
            .arg(sequence)
            .arg(fresh_epoch())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.shared.unreachable(&e))?;
        position(&answer)
    }

    /// Hands in the events of `channel` in (after, until] from its history
    /// stream; those it no longer holds are declared lost.
    async fn fill(
        &self,
        router: &Router,
        channel: &str,
        epoch: &str,
        after: u64,
        until: u64,
    ) -> Result<(), Broken> {
        let mut conn = self.shared.conn.clone();
        let range: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.shared.keys.stream(channel))
            .arg(after + 1)
            .arg(until)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.shared.unreachable(&e))?;
        let now = unix_millis();
        let mut lost = Loss::default();
        let mut lose = |until: u64| {
            let loss = router.lose(channel, until);
            lost.events += loss.events;
            lost.connections = lost.connections.max(loss.connections);
            lost.sinks += loss.sinks;
        };
        let mut to_the_end = true;
        for entry in &range.ids {
            let Some(event) = from_entry(channel, entry, now, &self.shared.origin) else {
                continue;
            };
            if event.epoch != epoch {
                // The channel started another epoch since: the next check
                // takes it from there.
                to_the_end = false;
                break;
            }
            lose(event.sequence - 1);
            router.receive(&event);
        }
        if to_the_end {
            lose(until);
        }
        report_loss(channel, &lost);
        Ok(())
    }
}

/// Tells operators what the cluster lost of `channel`: an error when this
/// node's sinks lost events it had accepted, a warning when connections
/// were told with `connection.lagged`. Nothing otherwise: a node that
/// joins behind a channel's history "loses" what came before it, which
/// nobody here was waiting for.
fn report_loss(channel: &str, lost: &Loss) {
    let Loss {
        events,
        connections,
        sinks,
    } = *lost;
    let what = format!(
        "{events} event(s) of channel `{channel}` lost: pub/sub did not bring them and its \
         history stream in Redis no longer holds them; {connections} connection(s) told with \
         connection.lagged"
    );
    if sinks > 0 {
        tracing::error!(
            channel,
            events,
            sinks,
            "{what}; {sinks} of them were accepted by this node, and its sinks will never get \
             them (raise the channel's history if this recurs)"
        );
    } else if connections > 0 {
        tracing::warn!(
            channel,
            events,
            "{what} (raise the channel's history if this recurs)"
        );
    }
}

/// Reads a pub/sub event: channel, epoch, sequence, type, emitter, origin,
/// time, one a line, then the envelope. Only the origin (this process)
/// offers it to sinks.
fn parse(payload: &[u8], origin: &str) -> Option<Sequenced> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(8, '\n');
    let channel = parts.next()?;
    let epoch = parts.next()?;
    let sequence = parts.next()?.parse().ok()?;
    let type_name = parts.next()?;
    let emitter = parts.next()?;
    let sender = parts.next()?;
    let at: u64 = parts.next()?.parse().ok()?;
    let frame = parts.next()?;
    Some(Sequenced {
        channel: channel.to_owned(),
        epoch: epoch.to_owned(),
        sequence,
        type_name: type_name.to_owned(),
        frame: Text::from(frame.to_owned()),
        age: Duration::from_millis(unix_millis().saturating_sub(at)),
        to_sinks: sender == origin,
        emitter: (!emitter.is_empty()).then(|| emitter.to_owned()),
    })
}

/// Reads a history entry (id `<sequence>-1`; fields as the append script
/// writes them).
/// A channel's epoch and sequence, as the position scripts answer them.
fn position(answer: &[redis::Value]) -> Result<(String, u64), Broken> {
    match answer {
        [epoch, sequence] => match (
            redis::from_redis_value_ref::<String>(epoch),
            redis::from_redis_value_ref::<u64>(sequence),
        ) {
            (Ok(epoch), Ok(sequence)) => Ok((epoch, sequence)),
            _ => Err(format!("Redis answered a position oddly: {answer:?}")),
        },
        _ => Err(format!("Redis answered a position oddly: {answer:?}")),
    }
}

fn from_entry(
    channel: &str,
    entry: &redis::streams::StreamId,
    now: u64,
    origin: &str,
) -> Option<Sequenced> {
    let sequence = entry.id.split_once('-')?.0.parse().ok()?;
    let field = |name: &str| entry.get::<String>(name);
    let at: u64 = field("a")?.parse().ok()?;
    let emitter = field("e")?;
    Some(Sequenced {
        channel: channel.to_owned(),
        epoch: field("p")?,
        sequence,
        type_name: field("t")?,
        frame: Text::from(field("f")?),
        age: Duration::from_millis(now.saturating_sub(at)),
        to_sinks: field("n")? == origin,
        emitter: (!emitter.is_empty()).then_some(emitter),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pub_sub_event_is_read_whole_and_only_its_node_offers_it_to_sinks() {
        let payload = b"alerts\nE1\n42\nalert.created\n\nnode-a\n0\n{\"a\":\"x\ny\"}";
        let event = parse(payload, "node-a").unwrap();
        assert_eq!(
            (event.channel.as_str(), event.epoch.as_str(), event.sequence),
            ("alerts", "E1", 42)
        );
        assert_eq!(&*event.frame, "{\"a\":\"x\ny\"}");
        assert!(event.to_sinks && event.emitter.is_none());
        assert!(!parse(payload, "node-b").unwrap().to_sinks);
        assert!(parse(b"alerts\nE1\nnot-a-number\nt\n\nn\n0\n{}", "n").is_none());
    }
}
