//! A thin event reader over quick-xml that enforces [`Limits`] (depth, attribute size), refuses
//! entity declarations, resolves only the predefined and character references, and turns every
//! problem into a positioned [`ParseError`].

use quick_xml::Reader;
use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};

use super::{Limits, ParseError, codes};

/// One event the parsers care about.
pub(crate) enum Ev<'a> {
    /// An element opened; `empty` when it is `<x/>` (no matching `End` follows).
    Start {
        name: String,
        attrs: Vec<(String, String)>,
        empty: bool,
    },
    End,
    /// Character data, with references resolved.
    Text(std::borrow::Cow<'a, str>),
    Eof,
}

pub(crate) struct Xml<'a> {
    reader: Reader<&'a [u8]>,
    /// The whole file (for positions) and where the text given to the reader starts in it.
    bytes: &'a [u8],
    base: u64,
    file: &'a str,
    limits: &'a Limits,
    depth: usize,
    /// Byte offset (in `bytes`) where the last event returned started.
    pub(crate) pos: u64,
}

impl<'a> Xml<'a> {
    pub(crate) fn new(
        file: &'a str,
        bytes: &'a [u8],
        text: &'a str,
        base: u64,
        limits: &'a Limits,
    ) -> Self {
        let mut reader = Reader::from_str(text);
        let cfg = reader.config_mut();
        cfg.check_end_names = true;
        cfg.expand_empty_elements = false;
        cfg.trim_text(false);
        Self {
            reader,
            bytes,
            base,
            file,
            limits,
            depth: 0,
            pos: base,
        }
    }

    /// An error at the start of the last event.
    pub(crate) fn error(&self, code: &'static str, message: impl Into<String>) -> ParseError {
        ParseError::at(code, self.file, self.bytes, self.pos, message)
    }

    fn malformed(&self, offset: u64, e: impl std::fmt::Display) -> ParseError {
        ParseError::at(
            codes::XML_MALFORMED,
            self.file,
            self.bytes,
            self.base + offset,
            format!("malformed XML: {e}"),
        )
    }

    pub(crate) fn next(&mut self) -> Result<Ev<'a>, ParseError> {
        loop {
            let start = self.reader.buffer_position();
            self.pos = self.base + start;
            let ev = match self.reader.read_event() {
                Ok(ev) => ev,
                Err(e) => {
                    let at = self.reader.error_position();
                    return Err(self.malformed(at, e));
                }
            };
            match ev {
                Event::Start(e) => {
                    self.depth += 1;
                    if self.depth > self.limits.max_depth {
                        return Err(self.error(
                            codes::LIMIT_EXCEEDED,
                            format!(
                                "elements are nested deeper than {} levels",
                                self.limits.max_depth
                            ),
                        ));
                    }
                    return self.start(e, false);
                }
                Event::Empty(e) => {
                    if self.depth + 1 > self.limits.max_depth {
                        return Err(self.error(
                            codes::LIMIT_EXCEEDED,
                            format!(
                                "elements are nested deeper than {} levels",
                                self.limits.max_depth
                            ),
                        ));
                    }
                    return self.start(e, true);
                }
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    return Ok(Ev::End);
                }
                Event::Text(t) => {
                    let s = t.decode().map_err(|e| self.malformed(start, e))?;
                    return Ok(Ev::Text(s));
                }
                Event::CData(t) => {
                    let s = t.decode().map_err(|e| self.malformed(start, e))?;
                    return Ok(Ev::Text(s));
                }
                Event::GeneralRef(r) => {
                    if let Some(c) = r.resolve_char_ref().map_err(|e| self.malformed(start, e))? {
                        return Ok(Ev::Text(c.to_string().into()));
                    }
                    let name = r.decode().map_err(|e| self.malformed(start, e))?;
                    return match quick_xml::escape::resolve_predefined_entity(&name) {
                        Some(s) => Ok(Ev::Text(s.into())),
                        None => Err(self.error(
                            codes::XML_MALFORMED,
                            format!(
                                "unknown entity `&{name};`: only the five XML entities and character references are allowed (entities are never expanded)"
                            ),
                        )),
                    };
                }
                Event::DocType(d) => {
                    let s = d.decode().map_err(|e| self.malformed(start, e))?;
                    if s.contains("<!ENTITY") {
                        return Err(self.error(
                            codes::XML_DTD,
                            "the document declares entities in its DOCTYPE; entities are never expanded: remove the DOCTYPE",
                        ));
                    }
                }
                Event::Eof => {
                    if self.depth > 0 {
                        self.pos = self.base + self.reader.buffer_position();
                        return Err(self.error(
                            codes::XML_MALFORMED,
                            "malformed XML: the file ends inside an element (truncated?)",
                        ));
                    }
                    return Ok(Ev::Eof);
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            }
        }
    }

    /// An attribute error, placed where quick-xml says (its positions count from just after
    /// the `<`), with its "position N: " prefix dropped.
    fn attr_error(&self, err: AttrError) -> ParseError {
        let at = match err {
            AttrError::ExpectedEq(p)
            | AttrError::ExpectedValue(p)
            | AttrError::UnquotedValue(p)
            | AttrError::ExpectedQuote(p, _)
            | AttrError::Duplicated(p, _) => p as u64,
        };
        let text = err.to_string();
        let text = text
            .split_once(": ")
            .filter(|(head, _)| head.starts_with("position "))
            .map_or(text.as_str(), |(_, rest)| rest);
        ParseError::at(
            codes::XML_MALFORMED,
            self.file,
            self.bytes,
            self.pos + 1 + at,
            format!("malformed XML: {text}"),
        )
    }

    fn start(&self, e: BytesStart<'a>, empty: bool) -> Result<Ev<'a>, ParseError> {
        let name = String::from_utf8_lossy(e.local_name().into_inner()).into_owned();
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|err| self.attr_error(err))?;
            let key = String::from_utf8_lossy(a.key.local_name().into_inner()).into_owned();
            if a.value.len() > self.limits.max_attr_bytes {
                return Err(self.error(
                    codes::LIMIT_EXCEEDED,
                    format!(
                        "attribute `{key}` is {} bytes, over the limit of {} bytes",
                        a.value.len(),
                        self.limits.max_attr_bytes
                    ),
                ));
            }
            let value = a
                .decode_and_unescape_value(self.reader.decoder())
                .map_err(|err| {
                    self.error(
                        codes::XML_MALFORMED,
                        format!(
                            "malformed XML in attribute `{key}`: {err} (entities are never expanded)"
                        ),
                    )
                })?
                .into_owned();
            attrs.push((key, value));
        }
        Ok(Ev::Start { name, attrs, empty })
    }
}

/// The value of attribute `key`, if present.
pub(crate) fn attr<'v>(attrs: &'v [(String, String)], key: &str) -> Option<&'v str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}
