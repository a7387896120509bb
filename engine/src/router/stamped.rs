//! What this node stamped in a cluster store, per channel: its sinks are
//! offered an event only when it comes back through the store's feed, so
//! before a shutdown stops them it waits for the store to send back what
//! was stamped ([`super::Router::stamped_marks`]); and a stamp that never
//! comes back (the store lost it) is this node's sinks' loss, counted
//! ([`Stamped::lost`]) rather than silent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

/// What this node stamped: the last sequence on each channel, with its
/// epoch, and the stamps that have not come back yet.
#[derive(Debug, Default)]
pub struct Stamped(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    marks: Marks,
    /// Per channel, per epoch: the stamps not back yet.
    ahead: HashMap<Arc<str>, HashMap<Arc<str>, Ahead>>,
}

impl State {
    fn ahead(&mut self, channel: &str, epoch: &str) -> &mut Ahead {
        // Looked up before inserting: a key is allocated once per channel
        // and epoch, not for every event.
        if !self.ahead.contains_key(channel) {
            self.ahead.insert(channel.into(), HashMap::new());
        }
        let epochs = self.ahead.get_mut(channel).expect("inserted above");
        if !epochs.contains_key(epoch) {
            epochs.insert(epoch.into(), Ahead::default());
        }
        epochs.get_mut(epoch).expect("inserted above")
    }
}

/// One channel's epoch as seen from this node: how far the feed has
/// brought it back, and what this node stamped past that.
#[derive(Debug, Default)]
struct Ahead {
    back_through: u64,
    stamps: BTreeSet<u64>,
}

impl Ahead {
    /// Everything through `sequence` has come back or been declared lost:
    /// how many of this node's stamps were among it and are gone now.
    fn settle_through(&mut self, sequence: u64) -> usize {
        self.back_through = self.back_through.max(sequence);
        let later = self.stamps.split_off(&(sequence + 1));
        std::mem::replace(&mut self.stamps, later).len()
    }
}

/// Per channel, the epoch and the last sequence this node had stamped at
/// some moment: what a shutdown waits to see come back.
#[derive(Clone, Debug, Default)]
pub struct Marks(HashMap<Arc<str>, (Arc<str>, u64)>);

impl Stamped {
    /// Notes that this node stamped `sequence` on `channel` in `epoch`.
    pub(super) fn record(&self, channel: &Arc<str>, epoch: &Arc<str>, sequence: u64) {
        let mut state = self.0.lock();
        let entry = state
            .marks
            .0
            .entry(channel.clone())
            .or_insert_with(|| (epoch.clone(), sequence));
        if entry.0 != *epoch {
            *entry = (epoch.clone(), sequence);
        } else if sequence > entry.1 {
            entry.1 = sequence;
        }
        let ahead = state.ahead(channel, epoch);
        // The feed may bring an event back before its publish is answered.
        if sequence > ahead.back_through {
            ahead.stamps.insert(sequence);
        }
    }

    /// What has been stamped so far.
    pub(super) fn marks(&self) -> Marks {
        self.0.lock().marks.clone()
    }

    /// This node's event `sequence` of `channel`'s `epoch` came back
    /// through the feed: its stamps up to it are back (or were declared
    /// lost before it, the feed delivering in order).
    pub(super) fn came_back(&self, channel: &str, epoch: &str, sequence: u64) {
        self.0.lock().ahead(channel, epoch).settle_through(sequence);
    }

    /// The store lost `channel`'s events of `epoch` through `until`: how
    /// many of them this node had stamped, which its sinks will never get.
    pub(super) fn lost(&self, channel: &str, epoch: &str, until: u64) -> usize {
        let mut state = self.0.lock();
        state
            .ahead
            .get_mut(channel)
            .and_then(|epochs| epochs.get_mut(epoch))
            .map_or(0, |ahead| ahead.settle_through(until))
    }

    /// `channel` moved to `epoch` (the store lost its state, or started
    /// it): how many of this node's stamps of its other epochs had not come
    /// back, which its sinks will never get.
    pub(super) fn left_for(&self, channel: &str, epoch: &str) -> usize {
        let mut state = self.0.lock();
        let Some(epochs) = state.ahead.get_mut(channel) else {
            return 0;
        };
        let mut gone = 0;
        epochs.retain(|e, ahead| {
            let keep = **e == *epoch;
            if !keep {
                gone += ahead.stamps.len();
            }
            keep
        });
        gone
    }
}

impl Marks {
    /// How many of these stamps may not have come back yet, given what
    /// each channel has delivered (`positions`: epoch and last sequence):
    /// per channel, the distance from the last delivered to the mark. An
    /// upper bound, as other nodes' events lie in between. A channel still
    /// on another epoch counts whole: the mark's epoch has not come back to
    /// it yet (or was itself replaced, which the caller's deadline then
    /// waits out).
    pub(super) fn behind(&self, positions: &BTreeMap<String, (String, u64)>) -> u64 {
        self.0
            .iter()
            .map(
                |(channel, (epoch, stamped))| match positions.get(&**channel) {
                    Some((delivered_epoch, delivered)) if **epoch == **delivered_epoch => {
                        stamped.saturating_sub(*delivered)
                    }
                    _ => *stamped,
                },
            )
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: &str, sequence: u64) -> BTreeMap<String, (String, u64)> {
        BTreeMap::from([("alerts".to_owned(), (epoch.to_owned(), sequence))])
    }

    #[test]
    fn what_was_stamped_is_behind_until_the_channel_delivers_it() {
        let stamped = Stamped::default();
        assert_eq!(stamped.marks().behind(&at("E1", 0)), 0, "nothing stamped");
        let (alerts, e1) = (Arc::from("alerts"), Arc::from("E1"));
        stamped.record(&alerts, &e1, 3);
        stamped.record(&alerts, &e1, 5);
        stamped.record(&alerts, &e1, 4);
        assert_eq!(stamped.marks().behind(&at("E1", 2)), 3);
        assert_eq!(stamped.marks().behind(&at("E1", 5)), 0);
        assert_eq!(
            stamped.marks().behind(&at("E1", 7)),
            0,
            "others' events after"
        );
    }

    #[test]
    fn a_stamp_in_an_epoch_the_channel_has_not_seen_is_behind_whole() {
        let stamped = Stamped::default();
        stamped.record(&Arc::from("alerts"), &Arc::from("E2"), 2);
        assert_eq!(stamped.marks().behind(&at("E1", 9)), 2);
        assert_eq!(stamped.marks().behind(&at("E2", 2)), 0);
        assert_eq!(
            stamped.marks().behind(&BTreeMap::new()),
            2,
            "no such channel yet"
        );
    }
}
