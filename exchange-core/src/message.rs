//! Messages: a [`Header`] that routes and a [`Body`] that carries the request or response.
//!
//! The JSON form is exactly Academy 1.x's `{"header": {...}, "body": {...}}`. Payload fields
//! (`pargs`, `kargs`, results, exceptions) stay the text the sender wrote; decode them on
//! demand with the accessors. Bodies of kinds this library does not know are kept as raw JSON
//! and written back byte for byte.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::id::{EntityId, deserialize_uuid};
use crate::payload;

/// The Academy protocol version this library writes.
pub const PROTOCOL_VERSION: &str = "1.1";

/// The library version written into `academy_version` (a plain PEP 440 version).
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Request or response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// Asks the destination to do something.
    Request,
    /// Answers a request (same tag and label).
    Response,
}

/// Routing information of a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Sender mailbox.
    pub src: EntityId,
    /// Destination mailbox: exchanges deliver by this field.
    pub dest: EntityId,
    /// Unique per request; a response carries the tag of the request it answers.
    #[serde(deserialize_with = "deserialize_uuid")]
    pub tag: Uuid,
    /// Which handle in the sender's process waits for the response.
    #[serde(default, deserialize_with = "deserialize_opt_uuid")]
    pub label: Option<Uuid>,
    /// Request or response.
    pub kind: MessageKind,
    /// Protocol version of the sender; `None` is an explicit `null` (incompatible).
    #[serde(default = "default_protocol_version")]
    pub protocol_version: Option<Cow<'static, str>>,
    /// Library version of the sender (informative).
    #[serde(default = "default_academy_version")]
    pub academy_version: Cow<'static, str>,
}

fn default_protocol_version() -> Option<Cow<'static, str>> {
    Some(Cow::Borrowed(PROTOCOL_VERSION))
}

fn default_academy_version() -> Cow<'static, str> {
    // The only release that spoke protocol 1.x without this field.
    Cow::Borrowed("0.5.0")
}

fn deserialize_opt_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
    let text = Option::<Cow<'de, str>>::deserialize(d)?;
    text.map(|t| Uuid::parse_str(t.trim()).map_err(|e| D::Error::custom(format!("invalid UUID {t:?}: {e}"))))
        .transpose()
}

impl Header {
    /// A header for a new request from `src` to `dest` with a fresh tag and no label.
    pub fn request(src: EntityId, dest: EntityId) -> Self {
        Header {
            src,
            dest,
            tag: Uuid::new_v4(),
            label: None,
            kind: MessageKind::Request,
            protocol_version: default_protocol_version(),
            academy_version: Cow::Borrowed(LIBRARY_VERSION),
        }
    }

    /// The header of a response to this request: `src` and `dest` swapped, same tag and label.
    ///
    /// # Errors
    /// [`Error::Codec`] if this header is itself a response.
    pub fn response(&self) -> Result<Header> {
        if self.kind == MessageKind::Response {
            return Err(Error::codec("cannot build a response to a response"));
        }
        Ok(Header {
            src: self.dest.clone(),
            dest: self.src.clone(),
            tag: self.tag,
            label: self.label,
            kind: MessageKind::Response,
            protocol_version: default_protocol_version(),
            academy_version: Cow::Borrowed(LIBRARY_VERSION),
        })
    }

    /// Checks that the sender speaks a compatible protocol (major version 1, no local segment).
    ///
    /// # Errors
    /// [`Error::IncompatibleProtocol`] otherwise.
    pub fn check_protocol(&self) -> Result<()> {
        match self.protocol_version.as_deref() {
            Some(v) if is_compatible(v) => Ok(()),
            other => Err(Error::IncompatibleProtocol { version: other.map(str::to_owned) }),
        }
    }
}

/// PEP 440 subset: compatible iff the major release number is 1 and there is no `+local` part.
fn is_compatible(version: &str) -> bool {
    let v = version.trim();
    if v.contains('+') {
        return false;
    }
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let major: String = v.chars().take_while(char::is_ascii_digit).collect();
    let rest = &v[major.len()..];
    major.parse::<u64>() == Ok(1) && (rest.is_empty() || rest.starts_with('.') || rest.starts_with(char::is_alphabetic))
}

/// Payload serialization strategy of an action request or response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// JSON text.
    Json,
    /// Base64 of Python pickle bytes (Academy's default); only basic values are read, see
    /// [`crate::pickle`].
    Pickle,
}

/// Asks an agent to run an action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    /// Name of the action.
    pub action: String,
    /// Strategy of `pargs` and `kargs`.
    pub serialization: Strategy,
    /// Strategy for the result (`None` = same as `serialization`).
    #[serde(default)]
    pub result_serialization: Option<Strategy>,
    /// Strategy for an exception (`None` = same as the effective result strategy).
    #[serde(default)]
    pub exception_serialization: Option<Strategy>,
    /// Encoded positional arguments (an array), as the sender wrote them.
    #[serde(deserialize_with = "deserialize_payload_text")]
    pub pargs: String,
    /// Encoded keyword arguments (an object), as the sender wrote them.
    #[serde(deserialize_with = "deserialize_payload_text")]
    pub kargs: String,
}

/// Payload fields are strings; Academy also accepts raw JSON and encodes it (Python style).
fn deserialize_payload_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        other => payload::encode(&other).map_err(D::Error::custom),
    }
}

impl ActionRequest {
    /// A `json`-strategy request with positional arguments (serialized as an array) and keyword
    /// arguments (serialized as an object).
    ///
    /// # Errors
    /// [`Error::Codec`] if the arguments cannot be encoded.
    pub fn json(action: impl Into<String>, args: &impl Serialize, kwargs: &impl Serialize) -> Result<Self> {
        Ok(ActionRequest {
            action: action.into(),
            serialization: Strategy::Json,
            result_serialization: None,
            exception_serialization: None,
            pargs: payload::encode(args)?,
            kargs: payload::encode(kwargs)?,
        })
    }

    /// Decodes the positional arguments.
    ///
    /// # Errors
    /// [`Error::Codec`] for text that does not decode into `T`.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T> {
        payload::decode_as(self.serialization, &self.pargs)
    }

    /// Decodes the keyword arguments.
    ///
    /// # Errors
    /// [`Error::Codec`] for text that does not decode into `T`.
    pub fn kwargs<T: DeserializeOwned>(&self) -> Result<T> {
        payload::decode_as(self.serialization, &self.kargs)
    }

    /// The strategy the response must use.
    pub fn effective_result_serialization(&self) -> Strategy {
        self.result_serialization.unwrap_or(self.serialization)
    }

    /// The strategy an error response must use (Academy: the exception strategy, else the
    /// result strategy).
    pub fn effective_exception_serialization(&self) -> Strategy {
        self.exception_serialization.unwrap_or(self.effective_result_serialization())
    }
}

/// The result of an action: normally `["__serialized__", "<payload>"]`.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionResult {
    /// Encoded payload text (the normal form).
    Serialized(String),
    /// A literal JSON value (Academy accepts one and uses it as the result).
    Literal(serde_json::Value),
}

const SERIALIZED: &str = "__serialized__";

impl Serialize for ActionResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ActionResult::Serialized(text) => (SERIALIZED, text).serialize(s),
            ActionResult::Literal(value) => value.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ActionResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        if let serde_json::Value::Array(items) = &value {
            if let [serde_json::Value::String(tag), serde_json::Value::String(text)] = items.as_slice() {
                if tag == SERIALIZED {
                    return Ok(ActionResult::Serialized(text.clone()));
                }
            }
        }
        Ok(ActionResult::Literal(value))
    }
}

/// The successful answer to an [`ActionRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionResponse {
    /// The encoded result.
    pub result: ActionResult,
    /// Strategy of `result`.
    pub serialization: Strategy,
}

impl ActionResponse {
    /// A `json`-strategy response carrying `value`.
    ///
    /// # Errors
    /// [`Error::Codec`] if the value cannot be encoded.
    pub fn json(value: &impl Serialize) -> Result<Self> {
        Self::new(Strategy::Json, value)
    }

    /// A response carrying `value` encoded with `serialization`.
    ///
    /// # Errors
    /// [`Error::Codec`] if the value cannot be encoded.
    pub fn new(serialization: Strategy, value: &impl Serialize) -> Result<Self> {
        Ok(ActionResponse {
            result: ActionResult::Serialized(payload::encode_as(serialization, value)?),
            serialization,
        })
    }

    /// Decodes the result.
    ///
    /// # Errors
    /// [`Error::Codec`] for text that does not decode into `T`.
    pub fn result<T: DeserializeOwned>(&self) -> Result<T> {
        match &self.result {
            ActionResult::Literal(value) => {
                T::deserialize(value).map_err(|e| Error::codec(format!("cannot decode result: {e}")))
            }
            ActionResult::Serialized(text) => payload::decode_as(self.serialization, text),
        }
    }
}

/// Framework-level error codes of an [`AcademyError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorCode {
    /// The mailbox was terminated while the request was pending (sent by exchanges).
    MailboxTerminated = 0,
    /// A ping waiting for agent startup was cancelled because the agent stopped.
    PingCancelled = 1,
    /// A cancel request named an action that is not running.
    ActionInvalidState = 2,
    /// The action was cancelled.
    ActionCancelled = 3,
    /// A user client received a request (users cannot serve requests).
    InvalidClient = 4,
    /// The request's protocol version is incompatible with the receiver's.
    IncompatibleProtocol = 5,
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*self as u8)
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match u64::deserialize(d)? {
            0 => ErrorCode::MailboxTerminated,
            1 => ErrorCode::PingCancelled,
            2 => ErrorCode::ActionInvalidState,
            3 => ErrorCode::ActionCancelled,
            4 => ErrorCode::InvalidClient,
            5 => ErrorCode::IncompatibleProtocol,
            other => return Err(D::Error::custom(format!("unknown academy error code {other}"))),
        })
    }
}

/// A framework-level error response (no payload serialization).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AcademyError {
    /// What happened.
    pub error_code: ErrorCode,
    /// The mailbox concerned, where the code has one.
    #[serde(default)]
    pub mailbox_id: Option<EntityId>,
}

/// The action raised: carries the encoded exception.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserError {
    /// Strategy of `exception`.
    pub serialization: Strategy,
    /// The encoded exception, as the sender wrote it.
    pub exception: String,
}

impl UserError {
    /// A `json`-strategy error that Python callers raise as `AcademyRemoteError(text)`.
    pub fn json(text: impl Into<String>) -> Self {
        #[derive(Serialize)]
        struct Wire {
            __exception__: bool,
            exception_str: String,
        }
        let exception =
            payload::encode(&Wire { __exception__: true, exception_str: text.into() }).expect("strings always encode");
        UserError { serialization: Strategy::Json, exception }
    }

    /// An error carrying `text` in `serialization`: json as [`UserError::json`], pickle as a
    /// builtin exception (see [`crate::pickle::encode_exception`]).
    pub fn new(serialization: Strategy, text: impl Into<String>) -> Self {
        match serialization {
            Strategy::Json => Self::json(text),
            Strategy::Pickle => UserError { serialization, exception: crate::pickle::encode_exception(&text.into()) },
        }
    }

    /// The error text: `exception_str` of a json-encoded exception, `Class: message` of a
    /// pickled one, else the raw payload.
    pub fn text(&self) -> String {
        match self.serialization {
            Strategy::Json => {
                if let Ok(serde_json::Value::Object(map)) = payload::decode::<serde_json::Value>(&self.exception) {
                    if let Some(serde_json::Value::String(text)) = map.get("exception_str") {
                        return text.clone();
                    }
                }
            }
            Strategy::Pickle => {
                if let Ok(text) = crate::pickle::exception_text(&self.exception) {
                    return text;
                }
            }
        }
        self.exception.clone()
    }
}

/// What a message carries.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// `action-request`.
    ActionRequest(ActionRequest),
    /// `ping-request`: liveness check.
    PingRequest,
    /// `cancel-request`: cancel the running action whose request had `target_tag`.
    CancelRequest {
        /// Tag of the action request to cancel.
        target_tag: Uuid,
    },
    /// `shutdown-request`: `terminate` overrides whether the agent's mailbox is terminated.
    ShutdownRequest {
        /// `None` = the agent's configured policy.
        terminate: Option<bool>,
    },
    /// `action-response`.
    ActionResponse(ActionResponse),
    /// `success-response`: answer to ping, shutdown and a successful cancel.
    SuccessResponse,
    /// `academy-error-response`.
    AcademyError(AcademyError),
    /// `user-error-response`.
    UserError(UserError),
    /// A body of a kind this library does not know, kept as the raw JSON received.
    Other(RawBody),
}

/// Raw JSON of a body this library does not know; written back byte for byte.
#[derive(Clone, Debug)]
pub struct RawBody(Box<RawValue>);

impl RawBody {
    /// The JSON text as received.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawBody {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Body {
    /// The wire name of the kind (`None` for an [`Body::Other`] without a string `kind`).
    pub fn kind_name(&self) -> Option<&str> {
        Some(match self {
            Body::ActionRequest(_) => "action-request",
            Body::PingRequest => "ping-request",
            Body::CancelRequest { .. } => "cancel-request",
            Body::ShutdownRequest { .. } => "shutdown-request",
            Body::ActionResponse(_) => "action-response",
            Body::SuccessResponse => "success-response",
            Body::AcademyError(_) => "academy-error-response",
            Body::UserError(_) => "user-error-response",
            Body::Other(_) => return None,
        })
    }

    /// Request or response, for the known kinds.
    pub fn message_kind(&self) -> Option<MessageKind> {
        match self {
            Body::ActionRequest(_) | Body::PingRequest | Body::CancelRequest { .. } | Body::ShutdownRequest { .. } => {
                Some(MessageKind::Request)
            }
            Body::Other(_) => None,
            _ => Some(MessageKind::Response),
        }
    }
}

/// Writes the fields of `value`, then `"kind"` last, as Academy orders them.
fn serialize_with_kind<S: Serializer, T: Serialize>(s: S, fields: &T, kind: &str) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct WithKind<'a, T> {
        #[serde(flatten)]
        fields: &'a T,
        kind: &'a str,
    }
    WithKind { fields, kind }.serialize(s)
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Cancel<'a> {
            target_tag: &'a Uuid,
        }
        #[derive(Serialize)]
        struct Shutdown {
            terminate: Option<bool>,
        }
        #[derive(Serialize)]
        struct Empty {}
        let kind = self.kind_name().unwrap_or_default();
        match self {
            Body::ActionRequest(b) => serialize_with_kind(s, b, kind),
            Body::PingRequest | Body::SuccessResponse => serialize_with_kind(s, &Empty {}, kind),
            Body::CancelRequest { target_tag } => serialize_with_kind(s, &Cancel { target_tag }, kind),
            Body::ShutdownRequest { terminate } => serialize_with_kind(s, &Shutdown { terminate: *terminate }, kind),
            Body::ActionResponse(b) => serialize_with_kind(s, b, kind),
            Body::AcademyError(b) => serialize_with_kind(s, b, kind),
            Body::UserError(b) => serialize_with_kind(s, b, kind),
            Body::Other(raw) => raw.0.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Body::from_raw(raw).map_err(D::Error::custom)
    }
}

impl Body {
    /// Parses a body from its raw JSON; unknown kinds become [`Body::Other`].
    fn from_raw(raw: Box<RawValue>) -> Result<Body, serde_json::Error> {
        #[derive(Deserialize)]
        struct Kind<'a> {
            #[serde(borrow, default)]
            kind: Option<Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        struct Cancel {
            #[serde(deserialize_with = "deserialize_uuid")]
            target_tag: Uuid,
        }
        #[derive(Deserialize)]
        struct Shutdown {
            #[serde(default)]
            terminate: Option<bool>,
        }
        let text = raw.get();
        let kind: Kind<'_> = serde_json::from_str(text)?;
        Ok(match kind.kind.as_deref() {
            Some("action-request") => Body::ActionRequest(serde_json::from_str(text)?),
            Some("ping-request") => Body::PingRequest,
            Some("cancel-request") => {
                Body::CancelRequest { target_tag: serde_json::from_str::<Cancel>(text)?.target_tag }
            }
            Some("shutdown-request") => {
                Body::ShutdownRequest { terminate: serde_json::from_str::<Shutdown>(text)?.terminate }
            }
            Some("action-response") => Body::ActionResponse(serde_json::from_str(text)?),
            Some("success-response") => Body::SuccessResponse,
            Some("academy-error-response") => Body::AcademyError(serde_json::from_str(text)?),
            Some("user-error-response") => Body::UserError(serde_json::from_str(text)?),
            _ => Body::Other(RawBody(raw)),
        })
    }
}

/// A message: header plus body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Routing information.
    pub header: Header,
    /// The request or response.
    pub body: Body,
}

impl Message {
    /// A new request from `src` to `dest` with a fresh tag and no label.
    pub fn request(src: impl Into<EntityId>, dest: impl Into<EntityId>, body: Body) -> Self {
        Message { header: Header::request(src.into(), dest.into()), body }
    }

    /// Sets the label (the id of the waiting handle).
    pub fn with_label(mut self, label: Uuid) -> Self {
        self.header.label = Some(label);
        self
    }

    /// A response to this request carrying `body`.
    ///
    /// # Errors
    /// [`Error::Codec`] if this message is itself a response.
    pub fn response(&self, body: Body) -> Result<Message> {
        Ok(Message { header: self.header.response()?, body })
    }

    /// The `academy-error-response` code 0 an exchange sends to the requester of `request`
    /// when the request's destination is terminated before answering it.
    ///
    /// # Errors
    /// [`Error::Codec`] if `request` is a response header.
    pub fn terminated_notice(request: &Header) -> Result<Message> {
        let body = Body::AcademyError(AcademyError {
            error_code: ErrorCode::MailboxTerminated,
            mailbox_id: Some(request.dest.clone()),
        });
        Ok(Message { header: request.response()?, body })
    }

    /// Sender.
    pub fn src(&self) -> &EntityId {
        &self.header.src
    }

    /// Destination.
    pub fn dest(&self) -> &EntityId {
        &self.header.dest
    }

    /// Tag.
    pub fn tag(&self) -> Uuid {
        self.header.tag
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        self.header.kind == MessageKind::Request
    }

    /// Parses Academy's JSON text.
    ///
    /// # Errors
    /// [`Error::Codec`] naming what was wrong.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::codec(format!("invalid message: {e}")))
    }

    /// Parses Academy's JSON bytes.
    ///
    /// # Errors
    /// [`Error::Codec`] naming what was wrong.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::codec(format!("invalid message: {e}")))
    }

    /// Compact JSON text, as Academy writes it.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        serde_json::to_writer(&mut out, self).expect("messages always serialize");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// A close upper guess of the encoded size, so large payloads are written without
    /// regrowing (and copying) the buffer.
    fn encoded_len_hint(&self) -> usize {
        let payload = match &self.body {
            Body::ActionRequest(r) => r.pargs.len() + r.kargs.len(),
            Body::ActionResponse(ActionResponse { result: ActionResult::Serialized(text), .. }) => text.len(),
            Body::UserError(e) => e.exception.len(),
            Body::Other(raw) => raw.get().len(),
            _ => 0,
        };
        // Payload text is escaped once more inside the message: allow for some growth.
        512 + payload + payload / 8
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Message<{} {} -> {} tag={}>",
            self.body.kind_name().unwrap_or("unknown"),
            self.header.src,
            self.header.dest,
            self.header.tag
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_versions() {
        for ok in ["1", "1.0", "1.1", "1.7", "1.9.3", "1.0rc1"] {
            assert!(is_compatible(ok), "{ok}");
        }
        for bad in ["2.0", "0.9", "1.1+fork", "garbage", "", "10.1"] {
            assert!(!is_compatible(bad), "{bad}");
        }
    }

    #[test]
    fn response_swaps_and_keeps_tag_and_label() {
        let src = crate::UserId::new(Some("u"));
        let dest = crate::AgentId::new(None);
        let label = Uuid::new_v4();
        let req = Message::request(src.clone(), dest.clone(), Body::PingRequest).with_label(label);
        let resp = req.response(Body::SuccessResponse).unwrap();
        assert_eq!(resp.header.src, dest);
        assert_eq!(resp.header.dest, src);
        assert_eq!((resp.tag(), resp.header.label), (req.tag(), Some(label)));
        assert!(resp.response(Body::SuccessResponse).is_err());
    }

    #[test]
    fn payload_accessors() {
        let req = ActionRequest::json("add", &(1, 2), &serde_json::json!({"scale": 0.5})).unwrap();
        assert_eq!(req.pargs, "[1, 2]");
        assert_eq!(req.kargs, r#"{"scale": 0.5}"#);
        let (a, b): (i64, i64) = req.args().unwrap();
        assert_eq!(a + b, 3);
        let resp = ActionResponse::json(&"hello").unwrap();
        assert_eq!(serde_json::to_string(&resp.result).unwrap(), r#"["__serialized__","\"hello\""]"#);
        assert_eq!(resp.result::<String>().unwrap(), "hello");
        let err = UserError::json("ValueError: bad value\n");
        assert_eq!(err.exception, r#"{"__exception__": true, "exception_str": "ValueError: bad value\n"}"#);
        assert_eq!(err.text(), "ValueError: bad value\n");
        let pickled = ActionRequest { serialization: Strategy::Pickle, ..req };
        assert!(matches!(pickled.args::<serde_json::Value>(), Err(Error::Codec { .. })));
    }

    #[test]
    fn unknown_kinds_round_trip_verbatim() {
        let text = r#"{"header":{"src":{"uid":"00000000-0000-4000-8000-000000000002","name":null,"role":"user"},"dest":{"uid":"00000000-0000-4000-8000-000000000001","name":null,"role":"agent"},"tag":"11111111-1111-4111-8111-111111111111","label":null,"kind":"request","protocol_version":"1.1","academy_version":"1.0.0"},"body":{"kind":"future-request","x":[1, 2]}}"#;
        let msg = Message::from_json(text).unwrap();
        assert!(matches!(msg.body, Body::Other(_)));
        assert_eq!(msg.to_json(), text);
    }

    #[test]
    fn bad_input_is_a_codec_error() {
        for bad in ["", "{", "[]", r#"{"header":{},"body":{}}"#, r#"{"header":1}"#] {
            assert!(matches!(Message::from_json(bad), Err(Error::Codec { .. })), "{bad}");
        }
    }
}
