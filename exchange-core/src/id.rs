//! Mailbox identifiers: [`AgentId`], [`UserId`] and the union [`EntityId`].
//!
//! The JSON form is exactly Academy 1.x's: `{"uid":"<uuid>","name":<string|null>,"role":"agent"|"user"}`.
//! Equality and hashing use the role and the uid only; the name is decoration.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Which kind of entity owns a mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An agent: a stateful actor that serves requests.
    Agent,
    /// A user: a client that sends requests and receives responses.
    User,
}

impl Role {
    /// The wire name of the role (`"agent"` or `"user"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::User => "user",
        }
    }
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $role:expr, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            uid: Uuid,
            name: Option<Arc<str>>,
        }

        impl $name {
            /// A fresh random (v4) id with an optional human-readable name.
            pub fn new(name: Option<&str>) -> Self {
                Self::from_parts(Uuid::new_v4(), name)
            }

            /// An id with a given uid and optional name.
            pub fn from_parts(uid: Uuid, name: Option<&str>) -> Self {
                Self { uid, name: name.map(Arc::from) }
            }

            /// The UUID that identifies the mailbox.
            pub fn uid(&self) -> Uuid {
                self.uid
            }

            /// The optional human-readable name.
            pub fn name(&self) -> Option<&str> {
                self.name.as_deref()
            }

            /// The role this id type always has.
            pub const ROLE: Role = $role;
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.uid == other.uid
            }
        }

        impl Eq for $name {}

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                Self::ROLE.hash(state);
                self.uid.hash(state);
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                display_id(f, $label, self.uid, self.name())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                WireId { uid: self.uid, name: self.name(), role: Self::ROLE }.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match EntityId::deserialize(d)? {
                    EntityId::$name(id) => Ok(id),
                    other => Err(D::Error::custom(format!(
                        "expected a {} id, found {}",
                        Self::ROLE.as_str(),
                        other.role().as_str()
                    ))),
                }
            }
        }

        impl From<$name> for EntityId {
            fn from(id: $name) -> Self {
                EntityId::$name(id)
            }
        }
    };
}

define_id!(
    /// Identifies an agent's mailbox.
    AgentId,
    Role::Agent,
    "AgentId"
);
define_id!(
    /// Identifies a user's mailbox.
    UserId,
    Role::User,
    "UserId"
);

fn display_id(f: &mut fmt::Formatter<'_>, label: &str, uid: Uuid, name: Option<&str>) -> fmt::Result {
    match name {
        Some(name) => write!(f, "{label}<{name}>"),
        None => {
            let simple = uid.simple().to_string();
            write!(f, "{label}<{}>", &simple[..8])
        }
    }
}

/// Either kind of id: the owner of any mailbox.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum EntityId {
    /// An agent's id.
    AgentId(AgentId),
    /// A user's id.
    UserId(UserId),
}

impl EntityId {
    /// The mailbox UUID.
    pub fn uid(&self) -> Uuid {
        match self {
            EntityId::AgentId(id) => id.uid,
            EntityId::UserId(id) => id.uid,
        }
    }

    /// The optional human-readable name.
    pub fn name(&self) -> Option<&str> {
        match self {
            EntityId::AgentId(id) => id.name(),
            EntityId::UserId(id) => id.name(),
        }
    }

    /// Agent or user.
    pub fn role(&self) -> Role {
        match self {
            EntityId::AgentId(_) => Role::Agent,
            EntityId::UserId(_) => Role::User,
        }
    }

    /// An id of the given role.
    pub fn from_parts(role: Role, uid: Uuid, name: Option<&str>) -> Self {
        match role {
            Role::Agent => AgentId::from_parts(uid, name).into(),
            Role::User => UserId::from_parts(uid, name).into(),
        }
    }

    /// The agent id, if this is one.
    pub fn as_agent(&self) -> Option<&AgentId> {
        match self {
            EntityId::AgentId(id) => Some(id),
            EntityId::UserId(_) => None,
        }
    }

    /// Compact JSON text of the id, exactly as Academy writes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("ids always serialize")
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntityId::AgentId(id) => fmt::Display::fmt(id, f),
            EntityId::UserId(id) => fmt::Display::fmt(id, f),
        }
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialEq<AgentId> for EntityId {
    fn eq(&self, other: &AgentId) -> bool {
        self.as_agent() == Some(other)
    }
}

impl PartialEq<UserId> for EntityId {
    fn eq(&self, other: &UserId) -> bool {
        matches!(self, EntityId::UserId(id) if id == other)
    }
}

/// The wire form written, in Academy's field order.
#[derive(Serialize)]
struct WireId<'a> {
    uid: Uuid,
    name: Option<&'a str>,
    role: Role,
}

/// The wire form read; unknown fields are rejected as Academy does.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnedWireId {
    #[serde(deserialize_with = "deserialize_uuid")]
    uid: Uuid,
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "default_role")]
    role: Role,
}

fn default_role() -> Role {
    // Academy tries the agent model first and `role` has a default there.
    Role::Agent
}

/// Accepts every form Python's `uuid.UUID` parses: hyphenated, 32 hex digits, braces, `urn:uuid:`.
pub(crate) fn deserialize_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    Uuid::parse_str(text.trim()).map_err(|e| D::Error::custom(format!("invalid UUID {text:?}: {e}")))
}

impl Serialize for EntityId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireId { uid: self.uid(), name: self.name(), role: self.role() }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for EntityId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = OwnedWireId::deserialize(d)?;
        Ok(EntityId::from_parts(wire.role, wire.uid, wire.name.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const AGENT: &str = r#"{"uid":"00000000-0000-4000-8000-000000000001","name":"calculator","role":"agent"}"#;

    #[test]
    fn round_trips_byte_for_byte() {
        let id: EntityId = serde_json::from_str(AGENT).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), AGENT);
        let agent: AgentId = serde_json::from_str(AGENT).unwrap();
        assert_eq!(agent.name(), Some("calculator"));
    }

    #[test]
    fn equality_ignores_name_but_not_role() {
        let uid = Uuid::new_v4();
        let a = AgentId::from_parts(uid, Some("a"));
        let b = AgentId::from_parts(uid, None);
        assert_eq!(a, b);
        let set: HashSet<EntityId> = [EntityId::from(a.clone()), EntityId::from(b)].into_iter().collect();
        assert_eq!(set.len(), 1);
        let user = EntityId::from(UserId::from_parts(uid, Some("a")));
        assert_ne!(EntityId::from(a), user);
    }

    #[test]
    fn accepts_python_uuid_forms_and_canonicalizes() {
        for uid in [
            "00000000000040008000000000000002",
            "{00000000-0000-4000-8000-000000000002}",
            "urn:uuid:00000000-0000-4000-8000-000000000002",
            "00000000-0000-4000-8000-00000000000A",
        ] {
            let id: EntityId = serde_json::from_str(&format!(r#"{{"uid":"{uid}","role":"user"}}"#)).unwrap();
            let text = id.to_json();
            assert!(text.starts_with(r#"{"uid":"00000000-0000-4000-8000-00000000000"#), "{text}");
            assert!(text.ends_with(r#","name":null,"role":"user"}"#), "{text}");
        }
    }

    #[test]
    fn rejects_unknown_fields_roles_and_bad_uuids() {
        for bad in [
            r#"{"uid":"00000000-0000-4000-8000-000000000001","role":"agent","extra":1}"#,
            r#"{"uid":"00000000-0000-4000-8000-000000000001","role":"robot"}"#,
            r#"{"uid":"not-a-uuid","role":"agent"}"#,
            r#"{"name":"x","role":"agent"}"#,
        ] {
            assert!(serde_json::from_str::<EntityId>(bad).is_err(), "{bad}");
        }
        let user = r#"{"uid":"00000000-0000-4000-8000-000000000001","name":null,"role":"user"}"#;
        assert!(serde_json::from_str::<AgentId>(user).is_err());
    }

    #[test]
    fn missing_role_is_an_agent() {
        let id: EntityId = serde_json::from_str(r#"{"uid":"00000000-0000-4000-8000-000000000001"}"#).unwrap();
        assert_eq!(id.role(), Role::Agent);
    }

    #[test]
    fn display_is_short() {
        let uid = Uuid::parse_str("abcdef01-0000-4000-8000-000000000001").unwrap();
        assert_eq!(AgentId::from_parts(uid, None).to_string(), "AgentId<abcdef01>");
        assert_eq!(UserId::from_parts(uid, Some("alice")).to_string(), "UserId<alice>");
    }
}
