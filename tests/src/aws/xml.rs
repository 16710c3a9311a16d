//! The small XML writer both APIs answer with.
//!
//! AWS's responses are flat, fixed documents whose element order the SDK does not care about
//! but people reading a capture do; writing them element by element keeps that order visible
//! in the code. Escaping is quick-xml's.

use std::fmt::Display;

use quick_xml::escape::escape;

/// An XML document being written.
pub(crate) struct Xml {
    out: String,
}

impl Xml {
    /// A document with an XML declaration, as Route 53 sends them.
    pub(crate) fn with_declaration() -> Self {
        Self {
            out: "<?xml version=\"1.0\"?>\n".to_string(),
        }
    }

    /// A document without a declaration, as the Query APIs send them.
    pub(crate) fn new() -> Self {
        Self { out: String::new() }
    }

    /// The root element, in the service's namespace.
    pub(crate) fn root(mut self, tag: &str, xmlns: &str, body: impl FnOnce(&mut Self)) -> String {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push_str(" xmlns=\"");
        self.out.push_str(&escape(xmlns));
        self.out.push_str("\">");
        body(&mut self);
        self.close(tag);
        self.out
    }

    /// The root element without a namespace, as EC2's error documents are.
    pub(crate) fn bare_root(mut self, tag: &str, body: impl FnOnce(&mut Self)) -> String {
        self.open(tag);
        body(&mut self);
        self.close(tag);
        self.out
    }

    /// An element with no content, `<tag/>`: an empty list.
    pub(crate) fn empty(&mut self, tag: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push_str("/>");
        self
    }

    /// `<tag>…</tag>` around whatever `body` writes.
    pub(crate) fn element(&mut self, tag: &str, body: impl FnOnce(&mut Self)) -> &mut Self {
        self.open(tag);
        body(self);
        self.close(tag);
        self
    }

    /// `<tag>value</tag>`, escaped.
    pub(crate) fn text(&mut self, tag: &str, value: impl Display) -> &mut Self {
        self.open(tag);
        self.out.push_str(&escape(value.to_string().as_str()));
        self.close(tag);
        self
    }

    /// `<tag>value</tag>` when there is a value.
    pub(crate) fn text_opt(&mut self, tag: &str, value: Option<impl Display>) -> &mut Self {
        if let Some(value) = value {
            self.text(tag, value);
        }
        self
    }

    fn open(&mut self, tag: &str) {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
    }

    fn close(&mut self, tag: &str) {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_escaped_elements() {
        let doc = Xml::new().root("R", "urn:x", |x| {
            x.element("A", |x| {
                x.text("B", "1 < 2 & \"q\"").text_opt("C", None::<&str>);
            })
            .text("D", 7);
        });
        assert_eq!(
            doc,
            "<R xmlns=\"urn:x\"><A><B>1 &lt; 2 &amp; &quot;q&quot;</B></A><D>7</D></R>"
        );
        assert!(
            Xml::with_declaration()
                .root("R", "urn:x", |_| {})
                .starts_with("<?xml version=\"1.0\"?>\n<R ")
        );
    }
}
