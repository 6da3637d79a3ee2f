//! Reads pickle bytes (protocols 0 to 5) into [`PyValue`]s without running anything.
//!
//! The reader is a pickle machine that builds an object graph in an arena and never imports
//! or calls anything: globals stay names. Calls of a few builtins that pickle uses for basic
//! types (`set`, `frozenset`, `bytearray`, `bytes`, `_codecs.encode` for bytes in protocols
//! 0 to 2) are evaluated; any other global, class or object is refused when the value is
//! read, with its qualified name. Shared references are copied; recursive structures, values
//! nested deeper than [`MAX_DEPTH`] and graphs expanding past [`MAX_NODES`] are refused.

use num_bigint::BigInt;

use super::value::PyValue;

/// Deepest nesting of containers accepted.
pub const MAX_DEPTH: usize = 256;

/// Most values a pickle may expand to (shared references are copied on reading).
pub const MAX_NODES: usize = 4_000_000;

/// Longest decimal integer literal read (protocols 0 and 1), Python's own default limit.
const MAX_DIGITS: usize = 4300;

/// What a pickle could not be read as.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DecodeError(pub(super) String);

type Ref = usize;

/// One object of the graph being built.
#[derive(Debug)]
enum Node {
    Scalar(PyValue),
    List(Vec<Ref>),
    Tuple(Vec<Ref>),
    Dict(Vec<(Ref, Ref)>),
    Set(Vec<Ref>),
    FrozenSet(Vec<Ref>),
    /// A global that was named but not imported.
    Global {
        module: String,
        name: String,
    },
    /// An object built by calling (or instantiating) a global: never evaluated.
    Object {
        class: Ref,
        args: Ref,
    },
}

enum Slot {
    Mark,
    Obj(Ref),
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    arena: Vec<Node>,
    stack: Vec<Slot>,
    memo: std::collections::HashMap<u64, Ref>,
}

/// Reads a pickle holding only basic values.
///
/// # Errors
/// [`DecodeError`] saying what could not be read (a malformed pickle, an unsupported opcode,
/// or the qualified name of a type outside Python's basic values).
pub(super) fn decode(data: &[u8]) -> Result<PyValue, DecodeError> {
    let (machine, root) = Machine::run(data)?;
    machine.value(root)
}

/// Reads a pickled exception (`cls(*args)`, possibly with state) without evaluating it:
/// returns the class's qualified name and its arguments (`None` when they are not basic
/// values).
///
/// # Errors
/// [`DecodeError`] when the pickle is malformed or is not an object built from a global
/// with basic-value arguments.
pub(super) fn decode_call(data: &[u8]) -> Result<(String, Option<Vec<PyValue>>), DecodeError> {
    let (machine, root) = Machine::run(data)?;
    let Node::Object { class, args } = &machine.arena[root] else {
        return Err(DecodeError("the pickle is not an exception object".into()));
    };
    let Node::Global { module, name } = &machine.arena[*class] else {
        return Err(DecodeError("the pickled exception has no class name".into()));
    };
    let args = machine.value(*args).ok().map(|args| match args {
        PyValue::Tuple(items) => items,
        other => vec![other],
    });
    Ok((qualified(module, name), args))
}

/// `module.name`, with Python 2's `__builtin__` and `exceptions` (protocols 0 to 2) read as
/// `builtins`, as Python 3 reads them.
fn qualified(module: &str, name: &str) -> String {
    let module = if is_builtins(module) || module == "exceptions" { "builtins" } else { module };
    format!("{module}.{name}")
}

fn is_builtins(module: &str) -> bool {
    module == "builtins" || module == "__builtin__"
}

impl<'a> Machine<'a> {
    fn run(data: &'a [u8]) -> Result<(Machine<'a>, Ref), DecodeError> {
        let mut m = Machine { data, pos: 0, arena: Vec::new(), stack: Vec::new(), memo: Default::default() };
        let root = m.execute()?;
        Ok((m, root))
    }

    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, DecodeError> {
        Err(DecodeError(format!("invalid pickle at byte {}: {}", self.pos, reason.into())))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let data = self.data;
        match self.pos.checked_add(n).filter(|&end| end <= data.len()) {
            Some(end) => {
                let bytes = &data[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            None => self.fail("truncated"),
        }
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn line(&mut self) -> Result<&'a [u8], DecodeError> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = &rest[..end];
                self.pos += end + 1;
                Ok(line)
            }
            None => self.fail("line without a newline"),
        }
    }

    fn text_line(&mut self) -> Result<&'a str, DecodeError> {
        let line = self.line()?;
        match std::str::from_utf8(line) {
            Ok(text) => Ok(text),
            Err(_) => self.fail("a text argument is not UTF-8"),
        }
    }

    fn len_u32(&mut self) -> Result<usize, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }

    fn len_u64(&mut self) -> Result<usize, DecodeError> {
        let n = u64::from_le_bytes(self.array()?);
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => self.fail("length too large"),
        }
    }

    fn utf8(&mut self, n: usize) -> Result<PyValue, DecodeError> {
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(PyValue::Str(text.to_owned())),
            Err(_) => self.fail("string is not UTF-8 (lone surrogates are not supported)"),
        }
    }

    fn node(&mut self, node: Node) -> Ref {
        self.arena.push(node);
        self.arena.len() - 1
    }

    fn push(&mut self, node: Node) {
        let r = self.node(node);
        self.stack.push(Slot::Obj(r));
    }

    fn push_scalar(&mut self, value: PyValue) {
        self.push(Node::Scalar(value));
    }

    fn pop(&mut self) -> Result<Ref, DecodeError> {
        match self.stack.pop() {
            Some(Slot::Obj(r)) => Ok(r),
            Some(Slot::Mark) => self.fail("unexpected mark"),
            None => self.fail("stack underflow"),
        }
    }

    fn top(&self) -> Result<Ref, DecodeError> {
        match self.stack.last() {
            Some(Slot::Obj(r)) => Ok(*r),
            Some(Slot::Mark) => self.fail("unexpected mark"),
            None => self.fail("stack underflow"),
        }
    }

    /// Pops everything down to (and including) the most recent mark.
    fn pop_mark(&mut self) -> Result<Vec<Ref>, DecodeError> {
        let Some(mark) = self.stack.iter().rposition(|s| matches!(s, Slot::Mark)) else {
            return self.fail("no mark on the stack");
        };
        // After the most recent mark there are only objects.
        let items =
            self.stack.drain(mark + 1..).filter_map(|s| if let Slot::Obj(r) = s { Some(r) } else { None }).collect();
        self.stack.pop();
        Ok(items)
    }

    fn str_of(&self, r: Ref) -> Option<&str> {
        match &self.arena[r] {
            Node::Scalar(PyValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn memo_put(&mut self, key: u64) -> Result<(), DecodeError> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), DecodeError> {
        match self.memo.get(&key) {
            Some(&r) => {
                self.stack.push(Slot::Obj(r));
                Ok(())
            }
            None => self.fail(format!("memo entry {key} is missing")),
        }
    }

    fn decimal_key(&mut self) -> Result<u64, DecodeError> {
        let line = self.text_line()?;
        match line.trim().parse() {
            Ok(key) => Ok(key),
            Err(_) => self.fail("bad memo key"),
        }
    }

    fn big_decimal(&self, text: &str) -> Result<BigInt, DecodeError> {
        let text = text.trim();
        let text = text.strip_suffix('L').unwrap_or(text);
        if text.len() > MAX_DIGITS {
            return self.fail(format!("integer literal longer than {MAX_DIGITS} digits"));
        }
        match text.parse::<BigInt>() {
            Ok(i) => Ok(i),
            Err(_) => self.fail(format!("bad integer literal {text:?}")),
        }
    }

    fn execute(&mut self) -> Result<Ref, DecodeError> {
        loop {
            let op = self.byte()?;
            match op {
                0x80 => {
                    let proto = self.byte()?;
                    if proto > 5 {
                        return self.fail(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a buffering hint.
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Slot::Mark),
                b'0' => match self.stack.pop() {
                    Some(_) => {}
                    None => return self.fail("stack underflow"),
                },
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.stack.push(Slot::Obj(top));
                }
                b'p' => {
                    let key = self.decimal_key()?;
                    self.memo_put(key)?;
                }
                b'q' => {
                    let key = self.byte()?.into();
                    self.memo_put(key)?;
                }
                b'r' => {
                    let key = self.len_u32()? as u64;
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(key)?;
                }
                b'g' => {
                    let key = self.decimal_key()?;
                    self.memo_get(key)?;
                }
                b'h' => {
                    let key = self.byte()?.into();
                    self.memo_get(key)?;
                }
                b'j' => {
                    let key = self.len_u32()? as u64;
                    self.memo_get(key)?;
                }
                b'N' => self.push_scalar(PyValue::None),
                0x88 => self.push_scalar(PyValue::Bool(true)),
                0x89 => self.push_scalar(PyValue::Bool(false)),
                b'I' => {
                    let line = self.text_line()?;
                    let value = match line {
                        "00" => PyValue::Bool(false),
                        "01" => PyValue::Bool(true),
                        text => PyValue::int(self.big_decimal(text)?),
                    };
                    self.push_scalar(value);
                }
                b'L' => {
                    let line = self.text_line()?;
                    let value = PyValue::int(self.big_decimal(line)?);
                    self.push_scalar(value);
                }
                b'J' => {
                    let value = i32::from_le_bytes(self.array()?);
                    self.push_scalar(PyValue::Int(value.into()));
                }
                b'K' => {
                    let value = self.byte()?;
                    self.push_scalar(PyValue::Int(value.into()));
                }
                b'M' => {
                    let value = u16::from_le_bytes(self.array()?);
                    self.push_scalar(PyValue::Int(value.into()));
                }
                0x8a => {
                    let n = self.byte()?.into();
                    let bytes = self.take(n)?;
                    self.push_scalar(PyValue::int(BigInt::from_signed_bytes_le(bytes)));
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.array()?);
                    let Ok(n) = usize::try_from(n) else { return self.fail("negative length") };
                    let bytes = self.take(n)?;
                    self.push_scalar(PyValue::int(BigInt::from_signed_bytes_le(bytes)));
                }
                b'F' => {
                    let line = self.text_line()?;
                    match line.trim().parse::<f64>() {
                        Ok(x) => self.push_scalar(PyValue::Float(x)),
                        Err(_) => return self.fail(format!("bad float literal {line:?}")),
                    }
                }
                b'G' => {
                    let x = f64::from_be_bytes(self.array()?);
                    self.push_scalar(PyValue::Float(x));
                }
                b'V' => {
                    let line = self.line()?;
                    let text = self.raw_unicode_escape(line)?;
                    self.push_scalar(PyValue::Str(text));
                }
                0x8c => {
                    let n = self.byte()?.into();
                    let value = self.utf8(n)?;
                    self.push_scalar(value);
                }
                b'X' => {
                    let n = self.len_u32()?;
                    let value = self.utf8(n)?;
                    self.push_scalar(value);
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let value = self.utf8(n)?;
                    self.push_scalar(value);
                }
                b'C' => {
                    let n = self.byte()?.into();
                    let bytes = self.take(n)?.to_vec();
                    self.push_scalar(PyValue::Bytes(bytes));
                }
                b'B' => {
                    let n = self.len_u32()?;
                    let bytes = self.take(n)?.to_vec();
                    self.push_scalar(PyValue::Bytes(bytes));
                }
                0x8e => {
                    let n = self.len_u64()?;
                    let bytes = self.take(n)?.to_vec();
                    self.push_scalar(PyValue::Bytes(bytes));
                }
                0x96 => {
                    let n = self.len_u64()?;
                    let bytes = self.take(n)?.to_vec();
                    self.push_scalar(PyValue::ByteArray(bytes));
                }
                b']' => self.push(Node::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.list_mut(list)?.push(item);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.list_mut(list)?.extend(items);
                }
                b')' => self.push(Node::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Node::Tuple(items));
                }
                b'}' => self.push(Node::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.push(Node::Dict(pairs));
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.dict_mut(dict)?.push((key, value));
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    let dict = self.top()?;
                    self.dict_mut(dict)?.extend(pairs);
                }
                0x8f => self.push(Node::Set(Vec::new())),
                0x90 => {
                    let items = self.pop_mark()?;
                    let set = self.top()?;
                    match &mut self.arena[set] {
                        Node::Set(existing) => existing.extend(items),
                        _ => return self.fail("ADDITEMS on something that is not a set"),
                    }
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Node::FrozenSet(items));
                }
                b'c' => {
                    let module = self.text_line()?.to_owned();
                    let name = self.text_line()?.to_owned();
                    self.push(Node::Global { module, name });
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.str_of(module), self.str_of(name)) else {
                        return self.fail("STACK_GLOBAL needs two strings");
                    };
                    let (module, name) = (module.to_owned(), name.to_owned());
                    self.push(Node::Global { module, name });
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let node = self.reduce(callable, args)?;
                    self.push(node);
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.push(Node::Object { class, args });
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.push(Node::Object { class, args });
                }
                b'i' => {
                    let module = self.text_line()?.to_owned();
                    let name = self.text_line()?.to_owned();
                    let items = self.pop_mark()?;
                    let class = self.node(Node::Global { module, name });
                    let args = self.node(Node::Tuple(items));
                    self.push(Node::Object { class, args });
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return self.fail("OBJ without a class");
                    }
                    let class = items.remove(0);
                    let args = self.node(Node::Tuple(items));
                    self.push(Node::Object { class, args });
                }
                b'b' => {
                    let _state = self.pop()?;
                    let target = self.top()?;
                    if !matches!(self.arena[target], Node::Object { .. }) {
                        return self.fail("BUILD on a basic value");
                    }
                }
                b'P' | b'Q' => return self.fail("persistent ids are not supported"),
                0x82..=0x84 => return self.fail("the extension registry is not supported"),
                0x97 | 0x98 => return self.fail("out-of-band buffers are not supported"),
                b'S' | b'T' | b'U' => return self.fail("Python 2 byte strings are not supported"),
                other => return self.fail(format!("unknown opcode 0x{other:02x}")),
            }
        }
    }

    fn list_mut(&mut self, r: Ref) -> Result<&mut Vec<Ref>, DecodeError> {
        let pos = self.pos;
        match &mut self.arena[r] {
            Node::List(items) => Ok(items),
            _ => Err(DecodeError(format!("invalid pickle at byte {pos}: APPEND on something that is not a list"))),
        }
    }

    fn dict_mut(&mut self, r: Ref) -> Result<&mut Vec<(Ref, Ref)>, DecodeError> {
        let pos = self.pos;
        match &mut self.arena[r] {
            Node::Dict(pairs) => Ok(pairs),
            _ => Err(DecodeError(format!("invalid pickle at byte {pos}: SETITEM on something that is not a dict"))),
        }
    }

    fn pairs(&self, items: Vec<Ref>) -> Result<Vec<(Ref, Ref)>, DecodeError> {
        if items.len() % 2 != 0 {
            return self.fail("odd number of items for a dict");
        }
        Ok(items.chunks(2).map(|kv| (kv[0], kv[1])).collect())
    }

    /// `callable(*args)`: evaluated for the allowed builtins, kept as an object otherwise.
    fn reduce(&self, callable: Ref, args: Ref) -> Result<Node, DecodeError> {
        let Node::Tuple(items) = &self.arena[args] else { return self.fail("REDUCE arguments are not a tuple") };
        let Node::Global { module, name } = &self.arena[callable] else {
            return Ok(Node::Object { class: callable, args });
        };
        let arg = |i: usize| items.get(i).map(|&r| &self.arena[r]);
        let text_arg = |i: usize| items.get(i).and_then(|&r| self.str_of(r));
        let latin1 = |i: usize| -> Option<Vec<u8>> {
            let encoding = text_arg(i + 1)?;
            if !matches!(encoding, "latin1" | "latin-1") || items.len() != i + 2 {
                return None;
            }
            text_arg(i)?.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
        };
        let basic = match (module.as_str(), name.as_str()) {
            (m, "set" | "frozenset") if is_builtins(m) => {
                let members = match (items.len(), arg(0)) {
                    (0, _) => Some(Vec::new()),
                    (1, Some(Node::List(v) | Node::Tuple(v) | Node::Set(v) | Node::FrozenSet(v))) => Some(v.clone()),
                    _ => None,
                };
                members.map(|m| if name == "set" { Node::Set(m) } else { Node::FrozenSet(m) })
            }
            (m, "bytearray" | "bytes") if is_builtins(m) => {
                let bytes = match (items.len(), arg(0)) {
                    (0, _) => Some(Vec::new()),
                    (1, Some(Node::Scalar(PyValue::Bytes(b) | PyValue::ByteArray(b)))) => Some(b.clone()),
                    _ => latin1(0),
                };
                bytes.map(|b| Node::Scalar(if name == "bytes" { PyValue::Bytes(b) } else { PyValue::ByteArray(b) }))
            }
            ("_codecs", "encode") => latin1(0).map(|b| Node::Scalar(PyValue::Bytes(b))),
            _ => None,
        };
        Ok(basic.unwrap_or(Node::Object { class: callable, args }))
    }

    /// Decodes a `raw-unicode-escape` line (protocol 0 strings).
    fn raw_unicode_escape(&self, line: &[u8]) -> Result<String, DecodeError> {
        let mut out = String::with_capacity(line.len());
        let mut i = 0;
        while i < line.len() {
            let b = line[i];
            let digits = match (b, line.get(i + 1)) {
                (b'\\', Some(b'u')) => 4,
                (b'\\', Some(b'U')) => 8,
                _ => 0,
            };
            if digits == 0 {
                out.push(char::from(b));
                i += 1;
                continue;
            }
            let hex = line.get(i + 2..i + 2 + digits).and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u32::from_str_radix(h, 16).ok()).and_then(char::from_u32) {
                Some(c) => out.push(c),
                None => return self.fail("bad \\u escape in a protocol 0 string"),
            }
            i += 2 + digits;
        }
        Ok(out)
    }

    /// The value of `root`, refusing anything outside the basic types.
    fn value(&self, root: Ref) -> Result<PyValue, DecodeError> {
        let mut budget = MAX_NODES;
        self.convert(root, 0, &mut budget)
    }

    fn convert(&self, r: Ref, depth: usize, budget: &mut usize) -> Result<PyValue, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError(format!("the value is recursive or nested deeper than {MAX_DEPTH} levels")));
        }
        if *budget == 0 {
            return Err(DecodeError(format!("the value expands to more than {MAX_NODES} items")));
        }
        *budget -= 1;
        let all = |items: &[Ref], budget: &mut usize| -> Result<Vec<PyValue>, DecodeError> {
            items.iter().map(|&i| self.convert(i, depth + 1, budget)).collect()
        };
        Ok(match &self.arena[r] {
            Node::Scalar(value) => value.clone(),
            Node::List(items) => PyValue::List(all(items, budget)?),
            Node::Tuple(items) => PyValue::Tuple(all(items, budget)?),
            Node::Set(items) => PyValue::Set(all(items, budget)?),
            Node::FrozenSet(items) => PyValue::FrozenSet(all(items, budget)?),
            Node::Dict(pairs) => PyValue::Dict(
                pairs
                    .iter()
                    .map(|&(k, v)| Ok((self.convert(k, depth + 1, budget)?, self.convert(v, depth + 1, budget)?)))
                    .collect::<Result<_, DecodeError>>()?,
            ),
            Node::Global { module, name } => return Err(refused(&qualified(module, name))),
            Node::Object { class, .. } => {
                let type_name = match &self.arena[*class] {
                    Node::Global { module, name } => qualified(module, name),
                    _ => "object".to_owned(),
                };
                return Err(refused(&type_name));
            }
        })
    }
}

fn refused(type_name: &str) -> DecodeError {
    DecodeError(format!(
        "cannot read a pickled {type_name}: only None, bool, int, float, str, bytes, bytearray, list, tuple, dict, \
         set and frozenset are accepted"
    ))
}
