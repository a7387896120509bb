//! An event stream's cursor: the last position delivered of every channel
//! seen on the stream, written as each message's `id:` and read back from
//! `Last-Event-ID`, so that a browser that reconnects recovers every
//! channel at once. Its text is the `since` parameter's:
//! `alerts:EPOCH:41,cameras:EPOCH:7`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::client_message;
use crate::connection::{Announcement, ChannelPosition, Frame};
use crate::protocol::Position;

/// Positions per channel, updated by every message that carries one.
#[derive(Debug, Default)]
pub struct Cursor {
    /// `(channel, epoch, sequence)`, sorted by channel: a stream sees few
    /// channels, and a sorted slice of them costs a fraction of a
    /// `BTreeMap`'s first node (~450 bytes) on every idle stream. A slice,
    /// not a `Vec`, saves every stream a word: a channel is added rarely.
    positions: Box<[Known]>,
    /// While the recovery the stream opened with is answered: each
    /// recovering channel and the sequence `connection.established`
    /// announced for it (empty otherwise).
    recovering: Box<[Announced]>,
}

/// A recovering channel and the sequence announced for it.
type Announced = (Arc<str>, u64);

/// A channel the stream has seen: its name, epoch and last sequence.
type Known = ChannelPosition;

/// The fields of a replayed event that move the cursor.
#[derive(Deserialize)]
struct Replayed {
    channel: String,
    sequence: u64,
}

/// The fields of a `subscribed` reply that move the cursor.
#[derive(Deserialize)]
struct Subscribed {
    #[serde(rename = "type")]
    kind: String,
    recovery: Option<BTreeMap<String, Recovered>>,
}

/// One channel's answer in a `subscribed` reply's `recovery`.
#[derive(Deserialize)]
struct Recovered {
    recovered: bool,
}

impl Cursor {
    /// A cursor at the positions the client asked to recover from: until
    /// the replay is read, they, not the channel's current position, are
    /// where a reconnect must start again.
    pub fn starting_at(since: Option<&BTreeMap<String, Position>>) -> Cursor {
        // A map's order is the channels' order.
        let positions = since
            .into_iter()
            .flatten()
            .map(|(channel, p)| (channel.as_str().into(), p.epoch.as_str().into(), p.sequence))
            .collect();
        Cursor {
            positions,
            recovering: Box::default(),
        }
    }

    /// Where `channel` is in `positions`, or where it would go.
    fn find(&self, channel: &str) -> Result<usize, usize> {
        self.positions
            .binary_search_by(|(known, _, _)| (**known).cmp(channel))
    }

    /// Where `channel` is: by pointer first, as the router's own name of
    /// it once [adopted](adopt), else by name (or where it would go).
    fn find_shared(&self, channel: &Arc<str>) -> Result<usize, usize> {
        self.positions
            .iter()
            .position(|(known, _, _)| Arc::ptr_eq(known, channel))
            .map_or_else(|| self.find(channel), Ok)
    }

    /// Sets `channel`'s position. The router shares one name and one epoch
    /// per channel with every event: adopted once, they let each later
    /// event be matched by pointer, without comparing names, and without
    /// cloning again (each clone is a write to a count that every lane's
    /// streams touch).
    fn set(&mut self, channel: &Arc<str>, epoch: &Arc<str>, sequence: u64) {
        match self.find_shared(channel) {
            Ok(i) => {
                let (known_channel, known_epoch, at) = &mut self.positions[i];
                adopt(known_channel, channel);
                adopt(known_epoch, epoch);
                *at = sequence;
            }
            Err(i) => {
                let mut positions = std::mem::take(&mut self.positions).into_vec();
                positions.insert(i, (channel.clone(), epoch.clone(), sequence));
                self.positions = positions.into_boxed_slice();
            }
        }
    }

    /// Moves the cursor past `frame`: a live event, a replayed one (under
    /// its channel's known epoch), or a message announcing positions
    /// (`connection.established`, `connection.channels`).
    pub fn saw(&mut self, frame: &Frame) {
        if let Some(event) = frame.event() {
            self.set(&event.channel, &event.epoch, event.sequence);
        } else if let Some(announced) = frame.announcement() {
            self.announced(announced);
        } else if let Frame::Replay(text) = frame {
            if let Ok(replayed) = serde_json::from_str::<Replayed>(text) {
                if let Ok(i) = self.find(&replayed.channel) {
                    self.positions[i].2 = replayed.sequence;
                }
            }
        } else if let Frame::Control(text) = frame {
            if !self.recovering.is_empty() {
                self.answered(text);
            }
        }
    }

    /// Once the recovery the stream opened with is answered (its
    /// `subscribed` reply), every event of a recovering channel up to its
    /// announced position has been replayed or reported as a gap: a
    /// channel not recovered goes on from there, so that a reconnect does
    /// not report the same gap again, and a recovered one from there at
    /// least (what it did not replay there did not match).
    fn answered(&mut self, text: &str) {
        let Ok(reply) = serde_json::from_str::<Subscribed>(text) else {
            return;
        };
        let (true, Some(recovery)) = (reply.kind == "subscribed", reply.recovery) else {
            return;
        };
        for (channel, announced) in std::mem::take(&mut self.recovering).into_vec() {
            let (Some(answer), Ok(i)) = (recovery.get(&*channel), self.find(&channel)) else {
                continue;
            };
            let at = &mut self.positions[i].2;
            *at = if answer.recovered {
                (*at).max(announced)
            } else {
                announced
            };
        }
    }

    /// Takes the positions `announced`, and the router's names with them.
    fn announced(&mut self, announced: &Announcement) {
        for (channel, epoch, sequence) in &announced.positions {
            match self.find(channel) {
                // A position in the announced epoch is being recovered
                // from: the replay moves it, not the announcement.
                Ok(i) if announced.opening && *self.positions[i].1 == **epoch => {
                    let (known_channel, known_epoch, _) = &mut self.positions[i];
                    adopt(known_channel, channel);
                    adopt(known_epoch, epoch);
                    let mut recovering = std::mem::take(&mut self.recovering).into_vec();
                    recovering.push((channel.clone(), *sequence));
                    self.recovering = recovering.into_boxed_slice();
                }
                _ => self.set(channel, epoch, *sequence),
            }
        }
    }

    /// Appends the `id:` text to `out`; nothing before any channel is known.
    pub fn write_id(&self, out: &mut Vec<u8>) {
        client_message::write_since(
            out,
            self.positions
                .iter()
                .map(|(channel, epoch, sequence)| (&**channel, &**epoch, *sequence)),
        );
    }
}

/// Makes `known` the router's shared `Arc` of the same name, or of the
/// epoch that replaces it.
fn adopt(known: &mut Arc<str>, shared: &Arc<str>) {
    if !Arc::ptr_eq(known, shared) {
        *known = shared.clone();
    }
}

/// The positions a reconnecting `EventSource` sends in `Last-Event-ID`.
pub fn from_last_event_id(
    headers: &http::HeaderMap,
) -> Result<Option<BTreeMap<String, Position>>, String> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "Last-Event-ID is not text".to_owned())?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    client_message::parse_since_param(text).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `id:` text, or `None` before any channel is known.
    fn id(cursor: &Cursor) -> Option<String> {
        let mut out = Vec::new();
        cursor.write_id(&mut out);
        (!out.is_empty()).then(|| String::from_utf8(out).unwrap())
    }

    /// An announcement of `(channel, epoch, sequence)`s, as the router
    /// makes one.
    fn announce(opening: bool, positions: &[(&Arc<str>, &Arc<str>, u64)]) -> Frame {
        let positions = positions
            .iter()
            .map(|(channel, epoch, sequence)| ((*channel).clone(), ((*epoch).clone(), *sequence)))
            .collect();
        Frame::announce("{}", &positions, opening)
    }

    #[test]
    fn the_cursor_follows_announced_positions_and_every_event_delivered() {
        let [alerts, e1, jobs, j, j2] = ["alerts", "E1", "jobs", "J", "J2"].map(Arc::<str>::from);
        let mut cursor = Cursor::default();
        assert_eq!(id(&cursor), None);
        cursor.saw(&announce(true, &[(&alerts, &e1, 4), (&jobs, &j, 0)]));
        assert_eq!(id(&cursor).unwrap(), "alerts:E1:4,jobs:J:0");
        cursor.saw(&Frame::Replay(
            r#"{"type":"alert.created","channel":"alerts","sequence":5}"#.into(),
        ));
        cursor.saw(&announce(false, &[(&jobs, &j2, 0)]));
        cursor.saw(&Frame::control(r#"{"type":"pong"}"#));
        assert_eq!(id(&cursor).unwrap(), "alerts:E1:5,jobs:J2:0");
    }

    #[test]
    fn a_recovering_stream_starts_at_its_since_and_holds_the_routers_names() {
        let position = Position {
            epoch: "E1".into(),
            sequence: 1,
        };
        let since = [("alerts".to_owned(), position)].into_iter().collect();
        let [alerts, e1, jobs, j] = ["alerts", "E1", "jobs", "J"].map(Arc::<str>::from);
        let mut cursor = Cursor::starting_at(Some(&since));
        cursor.saw(&announce(true, &[(&alerts, &e1, 3), (&jobs, &j, 0)]));
        assert_eq!(id(&cursor).unwrap(), "alerts:E1:1,jobs:J:0");
        // The names are the router's, not copies, the recovering
        // channel's too.
        let shared = |(channel, epoch): (&Arc<str>, &Arc<str>), (c, e, _): &Known| {
            Arc::ptr_eq(channel, c) && Arc::ptr_eq(epoch, e)
        };
        assert!(shared((&alerts, &e1), &cursor.positions[0]));
        assert!(shared((&jobs, &j), &cursor.positions[1]));
        cursor.saw(&Frame::Replay(
            r#"{"type":"alert.created","channel":"alerts","sequence":2}"#.into(),
        ));
        assert_eq!(id(&cursor).unwrap(), "alerts:E1:2,jobs:J:0");
    }

    #[test]
    fn last_event_id_is_read_as_since() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(from_last_event_id(&headers), Ok(None));
        headers.insert("last-event-id", "alerts:E1:5,jobs:J2:0".parse().unwrap());
        let since = from_last_event_id(&headers).unwrap().unwrap();
        assert_eq!(since["alerts"].sequence, 5);
        assert_eq!(since["jobs"].epoch, "J2");
        headers.insert("last-event-id", "alerts:E1".parse().unwrap());
        assert!(from_last_event_id(&headers).is_err());
    }
}
