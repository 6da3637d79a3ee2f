//! Key names of Academy 1.x's Redis transport layout (spec §4.1), under an optional namespace.

use uuid::Uuid;

/// Builds every key the exchange touches. Without a namespace the names are exactly Academy's
/// (`active:<uid>`, `queue:<uid>`, ...); with namespace `ns` every key starts with `ns:`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(namespace: Option<&str>) -> Self {
        Keys { prefix: namespace.map(|ns| format!("{ns}:")).unwrap_or_default() }
    }

    fn key(&self, kind: &str, uid: Uuid) -> String {
        format!("{}{kind}:{uid}", self.prefix)
    }

    /// `active:<uid>`: `ACTIVE`, or `INACTIVE` once terminated.
    pub(crate) fn active(&self, uid: Uuid) -> String {
        self.key("active", uid)
    }

    /// `agent:<uid>`: comma-joined behaviour names.
    pub(crate) fn agent(&self, uid: Uuid) -> String {
        self.key("agent", uid)
    }

    /// `queue:<uid>`: the message list.
    pub(crate) fn queue(&self, uid: Uuid) -> String {
        self.key("queue", uid)
    }

    /// `request:<dest>:<tag>`: header of a request not answered yet.
    pub(crate) fn request(&self, dest: Uuid, tag: Uuid) -> String {
        format!("{}request:{dest}:{tag}", self.prefix)
    }

    /// `outgoing:<uid>`: requests sent by the mailbox.
    pub(crate) fn outgoing(&self, uid: Uuid) -> String {
        self.key("outgoing", uid)
    }

    /// `completions:<uid>`: responses sent by the mailbox that matched a request.
    pub(crate) fn completions(&self, uid: Uuid) -> String {
        self.key("completions", uid)
    }

    /// `heartbeat:<uid>`: Redis time of the last heartbeat.
    pub(crate) fn heartbeat(&self, uid: Uuid) -> String {
        self.key("heartbeat", uid)
    }

    /// SCAN pattern of the pending requests addressed to `dest`.
    pub(crate) fn request_pattern(&self, dest: Uuid) -> String {
        format!("{}request:{dest}:*", glob_escape(&self.prefix))
    }

    /// SCAN pattern of every agent key.
    pub(crate) fn agent_pattern(&self) -> String {
        format!("{}agent:*", glob_escape(&self.prefix))
    }

    /// The uid of an `agent:<uid>` key found by SCAN.
    pub(crate) fn agent_uid(&self, key: &str) -> Option<Uuid> {
        key.strip_prefix(&self.prefix)?.strip_prefix("agent:").and_then(|uid| Uuid::parse_str(uid).ok())
    }
}

/// Escapes the characters Redis' glob matching treats specially.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layout_is_academys() {
        let uid = Uuid::parse_str("00000000-0000-4000-8000-000000000002").unwrap();
        let tag = Uuid::parse_str("00000000-0000-4000-8000-000000000003").unwrap();
        let keys = Keys::new(None);
        assert_eq!(keys.active(uid), "active:00000000-0000-4000-8000-000000000002");
        assert_eq!(
            keys.request(uid, tag),
            "request:00000000-0000-4000-8000-000000000002:00000000-0000-4000-8000-000000000003"
        );
        assert_eq!(keys.request_pattern(uid), "request:00000000-0000-4000-8000-000000000002:*");
        assert_eq!(keys.agent_uid(&keys.agent(uid)), Some(uid));
    }

    #[test]
    fn namespace_prefixes_and_escapes_patterns() {
        let uid = Uuid::new_v4();
        let keys = Keys::new(Some("team[a]*"));
        assert_eq!(keys.queue(uid), format!("team[a]*:queue:{uid}"));
        assert_eq!(keys.agent_pattern(), r"team\[a\]\*:agent:*");
        assert_eq!(keys.agent_uid(&keys.agent(uid)), Some(uid));
        assert_eq!(keys.agent_uid(&Keys::new(None).agent(uid)), None);
    }
}
