//! The platform's own names: the micro queue group and discovery subjects, and the streams and
//! subjects of dead letters and their replay. A domain's names (its services, endpoints, event
//! streams and consumers) live in its contract crate.

/// Queue group that every micro endpoint joins, so instances of one service share the load.
/// It is the micro protocol's default, so other languages' micro libraries join the same group.
pub const QUEUE_GROUP: &str = "q";

/// Prefix of the micro discovery subjects (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`).
pub const SRV_PREFIX: &str = "$SRV";

/// The dead-letter stream.
pub const DLQ_STREAM: &str = "DLQ";
/// Subjects of the `DLQ` stream.
pub const DLQ_STREAM_SUBJECTS: &str = "dlq.>";

/// The stream that carries dead letters replayed to the one consumer that failed them.
pub const REPLAY_STREAM: &str = "REPLAY";
/// Subjects of the `REPLAY` stream.
pub const REPLAY_STREAM_SUBJECTS: &str = "replay.>";

/// `dlq.<stream>.<consumer>`: where a consumer's dead letters go.
pub fn dlq_subject(stream: &str, consumer: &str) -> String {
    format!("dlq.{stream}.{consumer}")
}

/// `replay.<stream>.<consumer>.<origin subject>`: a dead letter of `consumer` on `stream`,
/// replayed to that consumer alone (stream `REPLAY`).
pub fn replay_subject(stream: &str, consumer: &str, origin_subject: &str) -> String {
    format!("replay.{stream}.{consumer}.{origin_subject}")
}

/// `replay.<stream>.<consumer>.>`: what a consumer's replay durable receives.
pub fn replay_filter(stream: &str, consumer: &str) -> String {
    format!("replay.{stream}.{consumer}.>")
}

/// `<stream>_<consumer>`: the durable on `REPLAY` that takes a consumer's replayed letters.
pub fn replay_durable(stream: &str, consumer: &str) -> String {
    format!("{stream}_{consumer}")
}

/// `$SRV.<verb>[.<name>[.<id>]]`: a micro discovery subject.
pub fn srv_subject(verb: &str, name: Option<&str>, id: Option<&str>) -> String {
    match (name, id) {
        (Some(name), Some(id)) => format!("{SRV_PREFIX}.{verb}.{name}.{id}"),
        (Some(name), None) => format!("{SRV_PREFIX}.{verb}.{name}"),
        _ => format!("{SRV_PREFIX}.{verb}"),
    }
}

/// The last token of a subject: the entity key of an event subject
/// (`events.<family>.<kind>.<key>`), which keeps one entity's events on one lane.
pub fn subject_key(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or(subject)
}

/// The second-to-last token of an event subject (`events.<family>.<kind>.<key>`): its kind.
pub fn subject_kind(subject: &str) -> Option<&str> {
    let mut tokens = subject.rsplit('.');
    tokens.next()?;
    tokens.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_subjects_name_the_stream_and_the_one_consumer() {
        let origin = "events.things.created.x";
        assert_eq!(
            replay_subject("EVENTS", "ledger", origin),
            "replay.EVENTS.ledger.events.things.created.x"
        );
        assert_eq!(replay_filter("EVENTS", "ledger"), "replay.EVENTS.ledger.>");
        assert_eq!(replay_durable("EVENTS", "ledger"), "EVENTS_ledger");
    }

    #[test]
    fn srv_subjects_narrow_by_name_and_id() {
        assert_eq!(srv_subject("PING", None, None), "$SRV.PING");
        assert_eq!(srv_subject("INFO", Some("billing"), None), "$SRV.INFO.billing");
        assert_eq!(srv_subject("STATS", Some("billing"), Some("abc")), "$SRV.STATS.billing.abc");
    }

    #[test]
    fn event_subjects_split_into_kind_and_key() {
        assert_eq!(subject_key("events.things.created.k1"), "k1");
        assert_eq!(subject_kind("events.things.created.k1"), Some("created"));
        assert_eq!(subject_kind("k1"), None);
    }
}
