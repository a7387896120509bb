//! What this node stamped in a cluster store, per channel: its sinks are
//! offered an event only when it comes back through the store's feed, so
//! before a shutdown stops them it waits for the store to send back what
//! was stamped ([`super::Router::stamped_marks`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

/// The last sequence this node stamped on each channel, with its epoch.
#[derive(Debug, Default)]
pub struct Stamped(Mutex<Marks>);

/// Per channel, the epoch and the last sequence this node had stamped at
/// some moment: what a shutdown waits to see come back.
#[derive(Clone, Debug, Default)]
pub struct Marks(HashMap<Arc<str>, (Arc<str>, u64)>);

impl Stamped {
    /// Notes that this node stamped `sequence` on `channel` in `epoch`.
    pub(super) fn record(&self, channel: &Arc<str>, epoch: &Arc<str>, sequence: u64) {
        let mut marks = self.0.lock();
        let entry = marks
            .0
            .entry(channel.clone())
            .or_insert_with(|| (epoch.clone(), sequence));
        if entry.0 != *epoch {
            *entry = (epoch.clone(), sequence);
        } else if sequence > entry.1 {
            entry.1 = sequence;
        }
    }

    /// What has been stamped so far.
    pub(super) fn marks(&self) -> Marks {
        self.0.lock().clone()
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
